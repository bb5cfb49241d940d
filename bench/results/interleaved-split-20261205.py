import statistics as st, sys
# Same clock on both ends (true offset 0): offset = (req - rep)/2, delay = req + rep.
for fn in sys.argv[1:]:
    rows={}
    for l in open(fn):
        f=l.split()
        if len(f)<15 or not f[0][0].isdigit(): continue
        off=float(f[11])*1e9; d=float(f[12])*1e9
        if f[-3]!='4I': continue
        rows.setdefault(f[2],[]).append((d/2+off, d/2-off))
    for ip,r in sorted(rows.items()):
        r=r[20:]
        q=lambda xs,p: round(sorted(xs)[int(len(xs)*p)])
        req=[a for a,b in r]; rep=[b for a,b in r]
        print(fn.split('/')[-1][:28], ip, len(r), "request path T1->T2 p10/50/90", q(req,.1),q(req,.5),q(req,.9), "| reply path T3->T4 p10/50/90", q(rep,.1),q(rep,.5),q(rep,.9))
