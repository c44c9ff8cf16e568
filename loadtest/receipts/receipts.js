// Receipt ingestion: JPush delivery and click callbacks posted to a channel's receipt URL, in
// batches of BATCH items, by VUS closed-loop clients for DURATION. Each item names a delivery
// of message MSGID to one of USERS registration ids `<PREFIX><i, 9 digits>` (the benchmark
// runner's seeding), so they are applied, not rejected as unknown.
//
//   RECEIPT_URL=http://127.0.0.1:8080/receipts/2/<token> APP_KEY=... MASTER_SECRET=... \
//   MSGID=... USERS=100000 PREFIX=rblast k6 run loadtest/receipts/receipts.js
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const url = __ENV.RECEIPT_URL;
const auth = 'Basic ' + encoding.b64encode(`${__ENV.APP_KEY}:${__ENV.MASTER_SECRET}`);
const users = Number(__ENV.USERS || 1000);
const batch = Number(__ENV.BATCH || 100);
const prefix = __ENV.PREFIX || 'rblast';
const msgid = __ENV.MSGID;
export const receipts = new Counter('receipts_posted');
export const applied = new Counter('receipts_applied');

export const options = {
  scenarios: {
    receipts: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 32),
      duration: __ENV.DURATION || '20s',
    },
  },
  thresholds: { http_req_failed: ['rate<0.001'] },
};

export default function () {
  const now = Math.floor(Date.now() / 1000);
  const items = [];
  for (let k = 0; k < batch; k++) {
    const i = Math.floor(Math.random() * users);
    items.push({
      msg_id: '1', registration_id: prefix + String(i).padStart(9, '0'), platform: 'android',
      // Mostly "received", some "clicked": both are state changes the hub must apply.
      type: Math.random() < 0.8 ? 1 : 2, time: now, params: { msgid: msgid },
    });
  }
  const res = http.post(url, JSON.stringify(items), {
    headers: { 'Content-Type': 'application/json', Authorization: auth },
  });
  check(res, { '200': (r) => r.status === 200 });
  receipts.add(batch);
  if (res.status === 200) {
    const b = res.json();
    applied.add((b.applied || 0) + (b.duplicate || 0));
  }
}
