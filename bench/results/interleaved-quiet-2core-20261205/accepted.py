"""Per source of a chronyd client's measurements log (`log measurements`): the interleaved samples
chronyd accepted (tests ABCD all 1) and their offset sd and median, and the offset of the eighth
with the lowest delay. Usage: python3 accepted.py measurements.log"""
import importlib.util, pathlib, statistics as st, sys
# The measurements-log parser of the split script one folder up (its name is no module name).
_split = pathlib.Path(__file__).resolve().parent.parent / "interleaved-xdp-split-2core-20261205.py"
_spec = importlib.util.spec_from_file_location("split", _split)
split = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split)
for ip, r in sorted(split.interleaved_samples(sys.argv[1]).items()):
    r = r[20:]
    acc = [x for x in r if x[0] == '1111']
    offs = [o for _, o, _ in acc]
    ds = sorted(d for _, _, d in r)
    cut = ds[len(ds) // 8]
    low = [o for _, o, d in r if d <= cut]
    print(f"{ip:14} accepted {len(acc):4}/{len(r)} offset sd {st.pstdev(offs):6.0f} p50 {st.median(offs):6.0f}  | lowest-delay 1/8: n={len(low)} offset sd {st.pstdev(low):6.0f} p50 {st.median(low):6.0f}  min delay {ds[0]:.0f}")
