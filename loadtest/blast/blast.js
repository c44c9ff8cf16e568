// Tag blast: one send to every user of a tag, then poll the message until it is done.
//
//   MSGHUB_URL=... MSGHUB_KEY=... MSGHUB_SECRET=... MSGHUB_ADMIN=... TAG=blast CHANNEL=app \
//   k6 run loadtest/blast/blast.js
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check, sleep } from 'k6';
import { Trend } from 'k6/metrics';

const url = __ENV.MSGHUB_URL || 'http://127.0.0.1:8080';
const auth = 'Basic ' + encoding.b64encode(`${__ENV.MSGHUB_KEY}:${__ENV.MSGHUB_SECRET}`);
const admin = `Bearer ${__ENV.MSGHUB_ADMIN}`;
const channel = __ENV.CHANNEL || 'app';
const blastSeconds = new Trend('blast_seconds');

export const options = {
  scenarios: { blast: { executor: 'shared-iterations', vus: 1, iterations: 1, maxDuration: __ENV.MAX || '30m' } },
  thresholds: { checks: ['rate==1'] },
};

const content = {
  app: [{ platform: 'all', notification: { alert: 'Flash sale starts now' } }],
  webhook: [{ event: 'flash_sale' }],
};

export default function () {
  const body = { aud_tag: [__ENV.TAG || 'blast'] };
  body[`msg_${channel}`] = content[channel];
  const started = Date.now();
  const res = http.post(`${url}/v1/sent`, JSON.stringify(body), {
    headers: { 'Content-Type': 'application/json', Authorization: auth },
  });
  check(res, { accepted: (r) => r.status === 200 && r.json('code') === 0 });
  const msgid = res.json('msgid');
  let status;
  for (;;) {
    status = http.get(`${url}/api/messages/${msgid}`, { headers: { Authorization: admin } }).json();
    if (status.state === 'done') break;
    sleep(0.25);
  }
  const seconds = (Date.now() - started) / 1000;
  blastSeconds.add(seconds);
  const target = status.channels.reduce((a, c) => a + c.target, 0);
  const failed = status.channels.reduce((a, c) => a + c.failed, 0);
  check(status, { 'nothing failed': () => failed === 0 });
  console.log(`blast ${msgid}: ${target} deliveries in ${seconds.toFixed(2)} s = ${(target / seconds).toFixed(0)}/s`);
}
