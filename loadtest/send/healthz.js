// The load generator's own floor: GET /healthz at a constant arrival rate, the same open model
// as send.js. The bench runs it at S-send's latency rate; a p99 near this one says more about
// k6 on this machine than about the hub.
//
//   MSGHUB_URL=http://127.0.0.1:8080 RATE=2000 DURATION=20s k6 run loadtest/send/healthz.js
import http from 'k6/http';
import { check } from 'k6';

const url = __ENV.MSGHUB_URL || 'http://127.0.0.1:8080';

export const options = {
  scenarios: {
    healthz: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 1000),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: Number(__ENV.VUS || 200),
      maxVUs: Number(__ENV.MAX_VUS || 2000),
    },
  },
};

export default function () {
  const res = http.get(`${url}/healthz`);
  check(res, { 'status 200': (r) => r.status === 200 });
}
