// Burst: transactional sends jump from a trickle to PEAK requests/s for a few seconds and fall
// back, as when a batch job or a retry storm hits the API. Every request must be accepted
// (durably stored) or refused with a JUMS code; none may fail with a 5xx or a dropped
// connection. Thresholds: error rate, and p99 (P99_MS, loose by default: a burst queues).
//
//   MSGHUB_URL=http://127.0.0.1:8080 MSGHUB_KEY=... MSGHUB_SECRET=... PEAK=5000 \
//   MSGHUB_USERID=demo-user-1 k6 run loadtest/burst/burst.js
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check } from 'k6';

const url = __ENV.MSGHUB_URL || 'http://127.0.0.1:8080';
const auth = 'Basic ' + encoding.b64encode(`${__ENV.MSGHUB_KEY}:${__ENV.MSGHUB_SECRET}`);
const userid = __ENV.MSGHUB_USERID || 'demo-user-1';
const peak = Number(__ENV.PEAK || 2000);
const base = Math.max(1, Math.floor(peak / 20));
const hold = __ENV.HOLD || '5s';

export const options = {
  scenarios: {
    burst: {
      executor: 'ramping-arrival-rate',
      startRate: base,
      timeUnit: '1s',
      preAllocatedVUs: Number(__ENV.VUS || 200),
      maxVUs: Number(__ENV.MAX_VUS || 4000),
      stages: [
        { target: base, duration: __ENV.CALM || '3s' },
        { target: peak, duration: '1s' },
        { target: peak, duration: hold },
        { target: base, duration: '1s' },
        { target: base, duration: __ENV.CALM || '3s' },
      ],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: [`p(99)<${__ENV.P99_MS || '1000'}`],
  },
};

const body = JSON.stringify({
  aud_userid: [userid],
  msg_app: [{ platform: 'all', notification: { alert: 'Your order has shipped' } }],
});

export default function () {
  const res = http.post(`${url}/v1/sent`, body, {
    headers: { 'Content-Type': 'application/json', Authorization: auth },
  });
  check(res, { 'code 0': (r) => r.status === 200 && r.json('code') === 0 });
}
