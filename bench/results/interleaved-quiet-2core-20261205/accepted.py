"""Per source of a chronyd client's measurements log (`log measurements`): the interleaved samples
chronyd accepted (tests ABCD all 1) and their offset sd and median, and the offset of the eighth
with the lowest delay. Usage: python3 accepted.py measurements.log"""
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 15 or not f[0][0].isdigit() or f[-3] != '4I':
        continue
    off, d = float(f[11]) * 1e9, float(f[12]) * 1e9
    rows.setdefault(f[2], []).append((f[7], off, d))
for ip, r in sorted(rows.items()):
    r = r[20:]
    acc = [x for x in r if x[0] == '1111']
    offs = [o for _, o, _ in acc]
    ds = sorted(d for _, _, d in r)
    cut = ds[len(ds) // 8]
    low = [o for _, o, d in r if d <= cut]
    print(f"{ip:14} accepted {len(acc):4}/{len(r)} offset sd {st.pstdev(offs):6.0f} p50 {st.median(offs):6.0f}  | lowest-delay 1/8: n={len(low)} offset sd {st.pstdev(low):6.0f} p50 {st.median(low):6.0f}  min delay {ds[0]:.0f}")
