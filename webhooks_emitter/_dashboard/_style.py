"""The dashboard's stylesheet: one short sheet, inlined in every page (no other request)."""

from __future__ import annotations

__all__ = ["STYLESHEET"]

# System fonts and colours that follow the reader's light or dark setting; tables scroll
# sideways inside their box on a phone instead of widening the page.
STYLESHEET = """
:root { color-scheme: light dark; --line: #8884; --warn: #b45309; --bad: #b91c1c; }
* { box-sizing: border-box; }
/* Store paths, ids and errors are long unbroken words: let them wrap, not widen the page. */
main > p, main > h2, header p { overflow-wrap: anywhere; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       padding: 0 1rem 2rem; max-width: 72rem; }
header { display: flex; flex-wrap: wrap; gap: .25rem 1rem; align-items: baseline;
         border-bottom: 1px solid var(--line); margin-bottom: 1rem; }
header h1 { font-size: 1.3rem; margin: .8rem 0 .5rem; }
header p { margin: 0; opacity: .75; min-width: 0; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.message { padding: .5rem .75rem; border: 1px solid var(--line); border-left: 4px solid #2563eb;
           border-radius: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem;
         border-bottom: 1px solid var(--line); }
#summary { width: auto; min-width: 16rem; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.paused { color: var(--warn); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
pre.body { margin: 0; max-width: 32rem; max-height: 12rem; overflow: auto; white-space: pre-wrap;
           word-break: break-all; font-size: .85rem; }
code { font-size: .85rem; word-break: break-all; }
.actions { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; margin: .5rem 0; }
form { margin: 0; }
button { font: inherit; padding: .3rem .8rem; cursor: pointer; }
button.danger { color: var(--bad); }
input[type=text] { font: inherit; padding: .25rem .4rem; max-width: 16rem; }
label { display: block; font-size: .85rem; }
.muted { opacity: .7; }
"""
