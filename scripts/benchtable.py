"""benchtable: the median tables of the datapath benchmarks.

bench-datapath.sh and bench-underlay.sh write raw.tsv, one row a
measurement: rep, config, test, value, extra (UDP loss % or TCP
retransmits). Table reads it; its table is median [min-max] of the rounds
per config and test, and ratios(w, b) the ratios of medians w/b.
"""
import collections
import csv
import statistics


def _num(v):
    try:
        return float(v)
    except ValueError:
        return float("nan")


class Table:
    def __init__(self, path):
        self.rows = collections.defaultdict(list)
        self.tests, self.cfgs = [], []
        for r in csv.reader(open(path), delimiter="\t"):
            self.rows[(r[1], r[2])].append(r)
            if r[2] not in self.tests:
                self.tests.append(r[2])
            if r[1] not in self.cfgs:
                self.cfgs.append(r[1])

    def med(self, c, t, i=3):
        """(median, min, max) of column i of config c's test t, or None."""
        v = [_num(r[i]) for r in self.rows[(c, t)] if _num(r[i]) == _num(r[i])]
        return (statistics.median(v), min(v), max(v)) if v else None

    def cell(self, c, t):
        m = self.med(c, t)
        if not m:
            return "n/a"
        f = "{:.3f}" if t == "ping_ms" else "{:.2f}"
        s = f.format(m[0]) + (f" [{f.format(m[1])}-{f.format(m[2])}]" if m[1] != m[2] else "")
        if t.startswith("udp"):
            l = self.med(c, t, 4)
            s += f", {l[0]:.2f}% loss" if l else ""
        elif t.startswith("tcp"):
            l = self.med(c, t, 4)
            s += f", {int(l[0])} retr" if l else ""
        return s

    def print(self, title):
        print(title)
        print("| config | " + " | ".join(self.tests) + " |")
        print("|---|" + "---|" * len(self.tests))
        for c in self.cfgs:
            print(f"| {c} | " + " | ".join(self.cell(c, t) for t in self.tests) + " |")
        print()

    def ratios(self, w, b):
        """The ratio of medians w/b of every test, formatted."""
        cells = []
        for t in self.tests:
            x, y = self.med(w, t), self.med(b, t)
            cells.append(f"{x[0]/y[0]:.2f}" if x and y and y[0] else "n/a")
        return cells
