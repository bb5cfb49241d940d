"""Per source of a chronyd client's measurements log: interleaved samples binned by their delay
above the source's minimum (0-100, 100-200, 200-400 ... ns), each bin's offset mean and sd.
Both ends read one clock, so a bin's mean is the offset error at that delay.
Usage: python3 delay-bins.py measurements.log"""
import importlib.util, pathlib, statistics as st, sys
# The measurements-log parser of the split script one folder up (its name is no module name).
_split = pathlib.Path(__file__).resolve().parent.parent / "interleaved-xdp-split-2core-20261205.py"
_spec = importlib.util.spec_from_file_location("split", _split)
split = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split)
for ip, r in sorted(split.interleaved_samples(sys.argv[1]).items()):
    r = [(off, d) for _, off, d in r[20:]]
    m = min(d for _, d in r)
    out = []
    for lo in (0, 100, 200, 400, 800, 1600):
        hi = {0:100,100:200,200:400,400:800,800:1600,1600:3200}[lo]
        o = [x for x, d in r if lo <= d - m < hi]
        if len(o) >= 2:
            out.append(f"+{lo}-{hi}: n={len(o)} {st.mean(o):.0f}±{st.pstdev(o):.0f}")
    print(f"{ip:13} min {m:.0f} | " + " | ".join(out))
