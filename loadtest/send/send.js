// Transactional sends at a constant arrival rate (open model): one user, one channel, durable
// acceptance. Thresholds fail the run when p99 or the error rate are out of bounds.
//
//   MSGHUB_URL=http://127.0.0.1:8080 MSGHUB_KEY=... MSGHUB_SECRET=... RATE=2000 DURATION=30s \
//   MSGHUB_USERID=demo-user-1 k6 run loadtest/send/send.js
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check } from 'k6';

const url = __ENV.MSGHUB_URL || 'http://127.0.0.1:8080';
const auth = 'Basic ' + encoding.b64encode(`${__ENV.MSGHUB_KEY}:${__ENV.MSGHUB_SECRET}`);
const userid = __ENV.MSGHUB_USERID || 'demo-user-1';
const p99 = __ENV.P99_MS || '20';

export const options = {
  scenarios: {
    sends: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 1000),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: Number(__ENV.VUS || 200),
      maxVUs: Number(__ENV.MAX_VUS || 2000),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: [`p(99)<${p99}`],
  },
};

const body = JSON.stringify({
  aud_userid: [userid],
  msg_app: [{ platform: 'all', notification: { alert: 'Your verification code is 123456' } }],
});

export default function () {
  const res = http.post(`${url}/v1/sent`, body, {
    headers: { 'Content-Type': 'application/json', Authorization: auth },
  });
  check(res, { 'code 0': (r) => r.status === 200 && r.json('code') === 0 });
}
