# Summarises one OUT folder of xdp-clients-1k-vs-1m-2core-20261205.sh: python3 summary.py DIR
import json, glob, os, re, sys, statistics as st
d = sys.argv[1]
rows = {}
for f in sorted(glob.glob(f"{d}/*.workers.json")):
    name = os.path.basename(f)[:-len(".workers.json")]
    L = json.load(open(f"{d}/{name}.json"))
    W = json.load(open(f))["workers"][0]
    cpu = int(open(f"{d}/{name}.cpu_ns").read())
    drops = sum(W["dropped"].values()); kods = sum(W["kod"].values())
    others = [l for l in open(f"{d}/{name}.others") if l.strip()]
    m = re.match(r"(long-|max)?-?r?(\d*)-?(\w+)-(\d)", name)
    key = ((m[1] or "short").strip("-"), int(m[2] or 0), m[3])
    a, b = [list(map(int, l.split()[1:9])) for l in open(f"{d}/{name}.stat")]
    x = [q - p for p, q in zip(a, b)]; tot = sum(x) or 1
    busy = tot - x[3] - x[4]
    r = dict(name=name, sent=L["sent"], ans=L["answered"], valid=L["valid"], loss=L["loss_pct"], rate=L["achieved_reply_rate"],
             send_rate=L["send_rate"], p50=L["rtt_p50_us"], p99=L["rtt_p99_us"], recv=W["received"], srv_ans=W["answered"],
             drops=drops, kods=kods, rl=W["dropped"]["rate_limited"], cpu_ns_req=cpu / max(W["answered"], 1), others=len(others), busy_ns_req=busy*1e7/max(W["answered"],1), idle=100*(x[3]+x[4])/tot)
    rows.setdefault(key, []).append(r)
    print(f"{name:24} sent {r['sent']:8} ans {r['ans']:8} loss {r['loss']:5.2f}% rate {r['rate']:7} (send {r['send_rate']:7}) rtt p50/p99 {r['p50']}/{r['p99']} us | srv recv {r['recv']} ans {r['srv_ans']} drops {drops} (rl {r['rl']}) kod {kods} | core1 busy {r['busy_ns_req']:.0f} ns/req idle {r['idle']:.0f}% | others {r['others']}")
print()
for key in sorted(rows):
    rs = rows[key]
    print(key, "median answered/s", st.median(r["rate"] for r in rs), "median loss", st.median(r["loss"] for r in rs),
          "median core1 busy ns/req", round(st.median(r["busy_ns_req"] for r in rs)), "all rates", [r["rate"] for r in rs])
