// Mixed: transactional single-user sends at a constant RATE while a tag blast to TAG runs.
// One scenario triggers the blast and polls its progress until it is done; the other measures
// the transactional p99 meanwhile. Compare with loadtest/send alone at the same rate: the
// ratio is S-isolation (target ≤ 2).
//
//   MSGHUB_URL=http://127.0.0.1:8080 MSGHUB_KEY=... MSGHUB_SECRET=... MSGHUB_ADMIN_TOKEN=... \
//   MSGHUB_USERID=demo-user-1 TAG=blast RATE=200 DURATION=20s k6 run loadtest/mixed/mixed.js
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check, sleep } from 'k6';
import { Trend } from 'k6/metrics';

const url = __ENV.MSGHUB_URL || 'http://127.0.0.1:8080';
const auth = 'Basic ' + encoding.b64encode(`${__ENV.MSGHUB_KEY}:${__ENV.MSGHUB_SECRET}`);
const admin = `Bearer ${__ENV.MSGHUB_ADMIN_TOKEN}`;
const userid = __ENV.MSGHUB_USERID || 'demo-user-1';
const duration = __ENV.DURATION || '20s';
export const txDuration = new Trend('transactional_duration', true);
export const blastSeconds = new Trend('blast_seconds');

export const options = {
  scenarios: {
    blast: { executor: 'shared-iterations', vus: 1, iterations: 1, exec: 'blast', maxDuration: __ENV.BLAST_MAX || '10m' },
    transactional: {
      executor: 'constant-arrival-rate', exec: 'transactional', rate: Number(__ENV.RATE || 200),
      timeUnit: '1s', duration, preAllocatedVUs: 100, maxVUs: 1000, startTime: '200ms',
    },
  },
  thresholds: {
    'http_req_failed{scenario:transactional}': ['rate<0.001'],
    transactional_duration: [`p(99)<${__ENV.P99_MS || '1000000'}`],
  },
};

const tx = JSON.stringify({
  aud_userid: [userid],
  msg_app: [{ platform: 'all', notification: { alert: 'Payment received' } }],
});

export function transactional() {
  const res = http.post(`${url}/v1/sent`, tx, { headers: { 'Content-Type': 'application/json', Authorization: auth } });
  txDuration.add(res.timings.duration);
  check(res, { 'code 0': (r) => r.status === 200 && r.json('code') === 0 });
}

export function blast() {
  const started = Date.now();
  const res = http.post(`${url}/v1/sent`, JSON.stringify({
    aud_tag: [__ENV.TAG || 'blast'],
    msg_app: [{ platform: 'all', notification: { alert: 'Big sale' } }],
  }), { headers: { 'Content-Type': 'application/json', Authorization: auth } });
  check(res, { 'blast accepted': (r) => r.status === 200 && r.json('code') === 0 });
  const msgid = res.json('msgid');
  for (;;) {
    const s = http.get(`${url}/api/messages/${msgid}`, { headers: { Authorization: admin } });
    if (s.status === 200 && s.json('state') === 'done') break;
    sleep(0.25);
  }
  blastSeconds.add((Date.now() - started) / 1000);
}
