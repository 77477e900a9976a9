"""Interpreter-heavy workload: a large heap of small objects that the program
keeps walking and updating. Every pass writes reference counts and fields
across the whole heap, so each epoch re-dirties tens of thousands of pages
(more than the default 8192-page delta cache holds)."""
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_500_000
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0


class Node:
    __slots__ = ("key", "count", "next")

    def __init__(self, key):
        self.key = key
        self.count = 0
        self.next = None


nodes = [Node(i) for i in range(n)]
for a, b in zip(nodes, nodes[1:]):
    a.next = b
index = {i: nodes[i] for i in range(0, n, 3)}
print("heap built", flush=True)
deadline = time.time() + seconds
step = 0
while time.time() < deadline:
    step += 1
    for node in nodes:
        node.count += step & 7
    for k in range(0, n, 3 * 97):
        index[k].key = (index[k].key * 31 + step) & 0xFFFFF
