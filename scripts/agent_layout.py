#!/usr/bin/env python3
"""The static agent's code layout: which input sections of m2me's .text the agent runs.

Usage: agent_layout.py MAP BINARY OUT.ld CALLGRIND_OUT...

MAP is the linker's map of m2me (MCIM_STATIC_AGENT writes it beside the build:
m2me.map), BINARY that m2me, and each CALLGRIND_OUT a callgrind profile of an agent
run from that binary (scripts/agent_layout.sh makes them). Every function the profiles
saw run in m2me is looked up by its address in BINARY, and the input section of the map
that holds it (a function of ours: its own, -ffunction-sections; one of OpenSSL, SQLite,
jansson or cjose: its object file's .text, as their archives are not built by function)
is listed in OUT.ld, in address order, as an input-section pattern of a linker script
that places them together, before the rest of .text (INSERT BEFORE .text: the default
script is otherwise unchanged). Why: a page of code is mapped into the agent with its
neighbours (the kernel's fault-around, 64 KiB), so code the agent runs, scattered over
the whole text, makes the whole text resident (docs/device.md, "Footprint").
"""
import bisect
import re
import subprocess
import sys


def text_sections(map_path):
    """(address, size, section, object) of every input section in .text, by address."""
    secs, in_text, pending = [], False, None
    with open(map_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            out = re.match(r"^(\.\S+)", line)  # an output section: at the line's start
            if out:
                # .text, and the section a layout already made (its code is as much run)
                in_text = out.group(1) in (".text", ".text.mcim_hot")
                pending = None
                continue
            if not in_text:
                continue
            m = re.match(r"^ (\.text\S*)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)", line)
            if m:
                secs.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1), m.group(4)))
                pending = None
                continue
            m = re.match(r"^ (\.text\S*)$", line)  # a long name: its figures on the next line
            if m:
                pending = m.group(1)
                continue
            m = re.match(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)", line)
            if m and pending:
                secs.append((int(m.group(1), 16), int(m.group(2), 16), pending, m.group(3)))
                pending = None
    return sorted(s for s in secs if s[1] > 0)


def functions_run(profiles, binary_name):
    """Names of the functions of binary_name that ran, from callgrind's output files
    (agent_layout.sh asks for names in full; with compressed names, one is defined once,
    at its first ob=/cob= or fn=/cfn=, and later lines give only its id)."""
    names = set()
    for path in profiles:
        objects, functions, current = {}, {}, None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                m = re.match(r"^(c?ob)=(?:\((\d+)\))? ?(.*)$", line)
                if m:
                    kind, ident, name = m.groups()
                    if ident and name:
                        objects[ident] = name
                    if kind == "ob":
                        current = name or objects.get(ident)
                    continue
                m = re.match(r"^(c?fn)=(?:\((\d+)\))? ?(.*)$", line)
                if m:
                    kind, ident, name = m.groups()
                    if ident and name:
                        functions[ident] = name
                    name = name or functions.get(ident)
                    if kind == "fn" and current and current.endswith(binary_name) and name:
                        names.add(name.split("'")[0])
    return names


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    map_path, binary, out_path, profiles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    secs = text_sections(map_path)
    if not secs:
        sys.exit("agent_layout.py: no .text input sections in " + map_path)
    names = functions_run(profiles, "/" + binary.split("/")[-1])
    if not names:
        sys.exit("agent_layout.py: no function of %s in the profiles" % binary)
    nm = subprocess.run(["nm", "-n", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    addresses = {}
    for line in nm.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            addresses.setdefault(p[2], []).append(int(p[0], 16))
    starts = [s[0] for s in secs]
    hot = set()
    for name in names:
        for a in addresses.get(name, []):  # a static name may be several functions: all
            k = bisect.bisect_right(starts, a) - 1
            if k >= 0 and secs[k][0] <= a < secs[k][0] + secs[k][1]:
                hot.add(k)
    lines = []
    for k in sorted(hot):
        _, _, section, obj = secs[k]
        m = re.match(r"^(.*/)?([^/(]+\.a)\(([^)]+)\)$", obj)
        pattern = "*%s:%s" % (m.group(2), m.group(3)) if m else "*" + obj.split("/")[-1]
        lines.append("    %s(%s)" % (pattern, section))
    hot_kib = sum(secs[k][1] for k in hot) / 1024
    all_kib = sum(s[1] for s in secs) / 1024
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("/* Generated by scripts/agent_layout.sh: do not edit. The input sections of the\n"
                " * static m2me's .text that an agent ran (%d functions, %d sections, %.0f of\n"
                " * %.0f KiB), placed together before the rest (scripts/agent_layout.py says\n"
                " * why; docs/device.md, \"Footprint\"). A pattern that matches nothing, after\n"
                " * a function or a library changed, only leaves that code where it was. */\n"
                % (len(names), len(hot), hot_kib, all_kib))
        f.write("SECTIONS\n{\n  .text.mcim_hot :\n  {\n")
        f.write("\n".join(lines) + "\n")
        f.write("  }\n}\nINSERT BEFORE .text;\n")
    print("agent_layout.py: %d functions ran, %d input sections, %.0f of %.0f KiB of .text"
          % (len(names), len(hot), hot_kib, all_kib))


if __name__ == "__main__":
    main()
