"""Per source of a chronyd client's measurements log: interleaved samples binned by their delay
above the source's minimum (0-100, 100-200, 200-400 ... ns), each bin's offset mean and sd.
Both ends read one clock, so a bin's mean is the offset error at that delay.
Usage: python3 delay-bins.py measurements.log"""
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 15 or not f[0][0].isdigit() or f[-3] != '4I':
        continue
    rows.setdefault(f[2], []).append((float(f[11]) * 1e9, float(f[12]) * 1e9))
for ip, r in sorted(rows.items()):
    r = r[20:]
    m = min(d for _, d in r)
    out = []
    for lo in (0, 100, 200, 400, 800, 1600):
        hi = {0:100,100:200,200:400,400:800,800:1600,1600:3200}[lo]
        o = [x for x, d in r if lo <= d - m < hi]
        if len(o) >= 2:
            out.append(f"+{lo}-{hi}: n={len(o)} {st.mean(o):.0f}±{st.pstdev(o):.0f}")
    print(f"{ip:13} min {m:.0f} | " + " | ".join(out))
