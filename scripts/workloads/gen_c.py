"""Writes a C translation unit large enough that an optimising compile runs
for several seconds and grows the compiler's heap to hundreds of MiB."""
import sys

funcs = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
out = []
out.append("#include <stdint.h>\n#include <string.h>\n")
out.append("typedef struct { int64_t a, b, c; double d[8]; char name[32]; } rec_t;\n")
for i in range(funcs):
    out.append(f"""
static int64_t helper_{i}(const rec_t *r, int n) {{
    int64_t acc = {i};
    for (int k = 0; k < n; k++) {{
        switch ((r[k].a + k) % 7) {{
        case 0: acc += r[k].b * {i % 13 + 1}; break;
        case 1: acc ^= r[k].c << {i % 5}; break;
        case 2: acc -= (int64_t)(r[k].d[k & 7] * {i % 9 + 2}.5); break;
        case 3: acc += (int64_t)strlen(r[k].name); break;
        default: acc = acc * 1103515245 + 12345;
        }}
    }}
    return acc;
}}
int64_t entry_{i}(rec_t *r, int n) {{
    for (int k = 0; k < n; k++) r[k].a += helper_{i}(r, k);
    return helper_{i}(r, n) + {i};
}}
""")
sys.stdout.write("".join(out))
