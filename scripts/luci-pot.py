#!/usr/bin/env python3
"""Writes luci-app-socksbalance's translation template,
openwrt/luci-app-socksbalance/po/templates/socksbalance.pot: every
_('...') string of its views and the menu titles, as LuCI's i18n-scan does
(a msgid per string, with the files that use it).

    scripts/luci-pot.py [--check]

--check: fail if the committed template is not what the sources give
(.ci/run), so that translators never work from a stale one.
"""

import json
import os
import re
import sys

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openwrt", "luci-app-socksbalance")
POT = os.path.join(APP, "po", "templates", "socksbalance.pot")
# _('...') or _("..."), with the quote escaped inside.
CALL = re.compile(r"""\b_\(\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")""")


def unescape(s):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


def po_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def strings():
    found = {}
    for top, _, files in os.walk(os.path.join(APP, "htdocs")):
        for f in sorted(files):
            if not f.endswith(".js"):
                continue
            path = os.path.join(top, f)
            rel = os.path.relpath(path, APP)
            text = open(path, encoding="utf-8").read()
            for m in CALL.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                s = unescape(m.group(1) if m.group(1) is not None else m.group(2))
                found.setdefault(s, []).append(f"{rel}:{line}")
    menu = os.path.join(APP, "root", "usr", "share", "luci", "menu.d", "luci-app-socksbalance.json")
    for entry in json.load(open(menu)).values():
        found.setdefault(entry["title"], []).append(os.path.relpath(menu, APP))
    return found


def render(found):
    out = ['msgid ""', 'msgstr ""', '"Content-Type: text/plain; charset=UTF-8"', ""]
    for s in sorted(found):
        out.append("#: " + " ".join(sorted(set(found[s]))))
        out.append("msgid " + po_quote(s))
        out.append('msgstr ""')
        out.append("")
    return "\n".join(out)


def main():
    text = render(strings())
    if sys.argv[1:] == ["--check"]:
        current = open(POT, encoding="utf-8").read() if os.path.exists(POT) else ""
        if current != text:
            sys.exit(f"{POT} is stale: run scripts/luci-pot.py")
        print(f"{os.path.relpath(POT)}: current ({text.count('msgid ') - 1} strings)")
        return
    os.makedirs(os.path.dirname(POT), exist_ok=True)
    with open(POT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(POT)} ({text.count('msgid ') - 1} strings)")


if __name__ == "__main__":
    main()
