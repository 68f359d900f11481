"""The HTML page of the catalogue: one file, its style and script inline, no network."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #777; --accent: #2b6cb0; }
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 1rem 3rem; }
header { position: sticky; top: 0; padding: .8rem 0; background: Canvas;
         border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 .2rem; font-size: 1.5rem; }
.summary { margin: 0 0 .5rem; color: var(--muted); }
#search { width: 100%; box-sizing: border-box; padding: .5rem .7rem; font-size: 1rem;
          border: 1px solid var(--line); border-radius: 6px; }
h2 { margin-top: 2rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem;
        margin: 1rem 0; }
.card[hidden] { display: none; }
.card h3 { margin: 0 0 .3rem; font-size: 1.1rem; }
.card h3 a { color: inherit; text-decoration: none; }
.version { font-size: .8rem; color: var(--accent); border: 1px solid var(--accent);
           border-radius: 4px; padding: 0 .3rem; margin-left: .4rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem;
           margin: .4rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line);
         vertical-align: top; }
code, pre { font-family: ui-monospace, monospace; font-size: .9em; }
pre { overflow-x: auto; padding: .6rem; border: 1px solid var(--line); border-radius: 6px; }
details { margin: .4rem 0; }
summary { cursor: pointer; }
.empty { color: var(--muted); font-style: italic; }
"""

_SCRIPT = """
(function () {
  var box = document.getElementById("search");
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var none = document.getElementById("no-results");
  function filter() {
    var terms = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var shown = 0;
    cards.forEach(function (card) {
      var text = card.getAttribute("data-search");
      var match = terms.every(function (term) { return text.indexOf(term) !== -1; });
      card.hidden = !match;
      if (match) { shown += 1; }
    });
    none.hidden = shown !== 0;
  }
  box.addEventListener("input", filter);
  if (location.hash) { box.value = ""; }
  filter();
})();
"""


def render_page(title: str, summary: str, cards: list[dict[str, Any]]) -> str:
    """Render the page; ``cards`` come from :func:`eventtracking.metadata.catalog._cards`."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="summary">{escape(summary)}</p>',
        '<input type="search" id="search" placeholder="Search names, descriptions and '
        'fields" aria-label="Search the catalogue" autofocus>',
        "</header>",
        "<main>",
    ]
    for kind, heading in (("event_type", "Event types"), ("context_type", "Context types")):
        selected = [card for card in cards if card["kind"] == kind]
        if not selected:
            continue
        section = "event-types" if kind == "event_type" else "context-types"
        parts.append(f'<section id="{section}">')
        parts.append(f"<h2>{heading}</h2>")
        parts.extend(_card(card) for card in selected)
        parts.append("</section>")
    parts += [
        '<p id="no-results" class="empty" hidden>Nothing matches the search.</p>',
        "</main>",
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _card(card: dict[str, Any]) -> str:
    kind = "event" if card["kind"] == "event_type" else "context"
    anchor = f"{kind}-{card['name']}"
    searchable = " ".join(
        [
            card["name"],
            card["description"],
            card["owner"] or "",
            *card["emitted_from"],
            *(f"{row['path']} {row['description']}" for row in card["fields"]),
        ]
    ).lower()
    out = [
        f'<article class="card {kind}-card" id="{escape(anchor)}" '
        f'data-name="{escape(card["name"])}" data-search="{escape(searchable)}">',
        f'<h3><a href="#{escape(anchor)}"><code>{escape(card["name"])}</code></a>'
        f'<span class="version">v{card["version"]}</span></h3>',
    ]
    if card["description"]:
        out.append(f'<p class="description">{escape(card["description"])}</p>')
    out.append('<dl class="facts">')
    out.append(f"<dt>Record id</dt><dd><code>{escape(card['id'])}</code></dd>")
    if card["owner"]:
        out.append(f"<dt>Owner</dt><dd>{escape(card['owner'])}</dd>")
    if card["emitted_from"]:
        where = ", ".join(f"<code>{escape(loc)}</code>" for loc in card["emitted_from"])
        out.append(f"<dt>Emitted from</dt><dd>{where}</dd>")
    if card["additional_fields"] and kind == "event":
        out.append("<dt>Undocumented fields</dt><dd>allowed</dd>")
    out.append("</dl>")
    if card["fields"]:
        out.append('<table class="fields">')
        out.append(
            "<thead><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th>"
            "</tr></thead><tbody>"
        )
        for row in card["fields"]:
            out.append(
                f'<tr><td class="field-path"><code>{escape(row["path"])}</code></td>'
                f'<td class="field-type">{escape(row["type"])}</td>'
                f"<td>{'yes' if row['required'] else 'no'}</td>"
                f"<td>{escape(row['description'])}</td></tr>"
            )
        out.append("</tbody></table>")
    else:
        out.append('<p class="empty">No documented fields.</p>')
    history = card["history"]
    out.append(f'<details class="versions"><summary>Versions ({len(history)})</summary>')
    out.append("<table><thead><tr><th>Version</th><th>Record id</th><th>Changes</th></tr>")
    out.append("</thead><tbody>")
    for row in history:
        current = " (current)" if row["current"] else ""
        out.append(
            f'<tr class="version-row"><td>{row["version"]}{current}</td>'
            f"<td><code>{escape(row['id'])}</code></td><td>{escape(row['changes'])}</td></tr>"
        )
    out.append("</tbody></table></details>")
    out.append(f'<details class="example"><summary>{card["example_label"]}</summary>')
    out.append(f'<pre><code class="language-json">{escape(card["example"])}</code></pre>')
    out.append("</details>")
    out.append("</article>")
    return "\n".join(out)
