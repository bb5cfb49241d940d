"""Splits a chronyd client's measurements log (log measurements rawmeasurements) into the request
path (client TX stamp T1 -> server RX stamp T2) and the reply path (server TX stamp T3 -> client
RX stamp T4) of each interleaved sample. Both ends read the same clock (namespaces on one host),
so the true offset is 0: offset = (req - rep)/2, delay = req + rep. Prints per server: samples,
p10/p50/p90 and sd of each path and of the offset, and a robust sd (1.4826 MAD) beside each sd.
Usage: python3 interleaved-xdp-split-2core-20261205.py measurements.log [SKIP]"""
import statistics as st, sys

def q(xs, p):
    return round(sorted(xs)[min(len(xs) - 1, int(len(xs) * p))])

def rsd(xs):
    m = st.median(xs)
    return round(1.4826 * st.median([abs(x - m) for x in xs]))

def interleaved_samples(path):
    """The log's interleaved samples per source address, in order: (tests ABCD as logged,
    offset ns, delay ns). Also used by interleaved-quiet-2core-20261205/*.py."""
    rows = {}
    for line in open(path):
        f = line.split()
        if len(f) < 15 or not f[0][0].isdigit() or f[-3] != '4I':
            continue
        rows.setdefault(f[2], []).append((f[7], float(f[11]) * 1e9, float(f[12]) * 1e9))
    return rows

def main():
    skip = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    rows = {ip: [(d / 2 + off, d / 2 - off, off) for _, off, d in r]
            for ip, r in interleaved_samples(sys.argv[1]).items()}
    for ip, r in sorted(rows.items()):
        r = r[skip:]
        # chronyd's sourcestats weights a sample by its delay: the low-delay quarter says most.
        cut = q([a + b for a, b, _ in r], .25)
        low = [x for x in r if x[0] + x[1] <= cut]
        print(f"{ip:14} delay p10/50/90 {q([a + b for a, b, _ in r], .1)} {q([a + b for a, b, _ in r], .5)}"
              f" {q([a + b for a, b, _ in r], .9)}")
        for name, xs in (("low-delay req", [a for a, _, _ in low]), ("low-delay rep", [b for _, b, _ in low]),
                         ("low-delay off", [c for _, _, c in low])):
            print(f"{ip:14} n={len(low)} {name:15} p10/50/90 {q(xs, .1):6} {q(xs, .5):6} {q(xs, .9):6}"
                  f"  sd {round(st.pstdev(xs)):6}  robust sd {rsd(xs):5}")
        for name, xs in (("request T1->T2", [a for a, _, _ in r]), ("reply T3->T4", [b for _, b, _ in r]),
                         ("offset", [c for _, _, c in r])):
            print(f"{ip:14} n={len(r)} {name:15} p10/50/90 {q(xs, .1):6} {q(xs, .5):6} {q(xs, .9):6}"
                  f"  sd {round(st.pstdev(xs)):6}  robust sd {rsd(xs):5}")

if __name__ == "__main__":
    main()
