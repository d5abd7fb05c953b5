"""Alerts an analyst can act on: incidents with their attack path, blast radius and reasons.

Alerts that share an entity (account, source host, destination) within ``horizon_s`` of the
incident's latest alert join one incident (incidents an alert links are merged). An incident
keeps its anomalous events in time order (who, from where, to where, how, when), with the
model's reasons for each (score parts, the most attended time steps and neighbours, plain
words), the entities involved, and its blast radius: what the compromised accounts and hosts
(the alerts' accounts, sources and destinations) reached in the window around the incident.
Output: JSON (for a SIEM), Markdown, an SVG picture of the incident subgraph and an HTML page.
"""

from __future__ import annotations

import html
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MAX_BLAST_TARGETS = 200
MAX_ALERTS_PER_INCIDENT = 500
# Accounts every host uses: sharing one says nothing about a common attacker.
SHARED_ACCOUNTS = frozenset({"SYSTEM", "LOCAL SERVICE", "NETWORK SERVICE", "ANONYMOUS LOGON", "system"})


@dataclass
class Incident:
    incident_id: str
    alerts: list[dict] = field(default_factory=list)
    blast: dict[str, dict[str, int]] = field(default_factory=dict)  # compromised entity -> {reached: events}
    # What new alerts link on, kept as alerts arrive (accounts, source hosts, logon targets).
    link_accounts: set[str] = field(default_factory=set)
    link_sources: set[str] = field(default_factory=set)
    link_hops: set[str] = field(default_factory=set)
    last_s: float = -math.inf  # newest alert time, seconds since 1970
    dropped: int = 0  # alerts beyond MAX_ALERTS_PER_INCIDENT, lowest scores first

    def take(self, alert: dict) -> None:
        e = alert["event"]
        if len(self.alerts) < MAX_ALERTS_PER_INCIDENT:
            self.alerts.append(alert)
        else:  # bounded: keep the highest-scoring alerts of a long incident
            self.dropped += 1
            low = min(range(len(self.alerts)), key=lambda k: self.alerts[k]["score"])
            if alert["score"] > self.alerts[low]["score"]:
                self.alerts[low] = alert
        if e["who"]:
            self.link_accounts.add(e["who"])
        if e["from"]:
            self.link_sources.add(e["from"])
        if e["to"] and e["event_type"] == "auth":
            self.link_hops.add(e["to"])
        self.last_s = max(self.last_s, pd.Timestamp(alert["ts"]).timestamp())

    @property
    def evidence(self) -> float:
        """Sum of the alert scores: many strange steps weigh more than one (the index ranks by it)."""
        return float(sum(a["score"] for a in self.alerts))

    @property
    def first_ts(self) -> str:
        return min(a["ts"] for a in self.alerts)

    @property
    def last_ts(self) -> str:
        return max(a["ts"] for a in self.alerts)

    def entities(self) -> dict[str, list[str]]:
        accounts, sources, targets = set(), set(), set()
        for a in self.alerts:
            e = a["event"]
            if e["who"]:
                accounts.add(e["who"])
            if e["from"]:
                sources.add(e["from"])
            if e["to"]:
                targets.add(e["to"])
        return {"accounts": sorted(accounts), "source_hosts": sorted(sources), "destinations": sorted(targets)}

    def attack_path(self) -> list[dict]:
        """The anomalous events in time order, each with the model's reasons."""
        ordered = sorted(self.alerts, key=lambda a: (a["ts"], a["event_id"]))
        return [
            {**a["event"], "event_id": a["event_id"], "score": a["score"], "reasons": a["reasons"],
             "score_parts": a["score_parts"], "time_attention": _top(a["time_attention"], "weight", 3),
             "neighbours": a["neighbours"][:3], "explanation": a.get("explanation", "model")}
            for a in ordered
        ]

    def blast_radius(self) -> list[dict]:
        return [
            {"entity": entity, "reached": sorted(reached), "n_reached": len(reached), "events": sum(reached.values())}
            for entity, reached in sorted(self.blast.items())
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "n_alerts": len(self.alerts) + self.dropped,
            "n_alerts_dropped": self.dropped,
            "max_score": max(a["score"] for a in self.alerts),
            "evidence": round(self.evidence, 4),
            "entities": self.entities(),
            "attack_path": self.attack_path(),
            "blast_radius": self.blast_radius(),
        }

    def to_markdown(self) -> str:
        d = self.to_dict()
        lines = [f"# Incident {self.incident_id}", "",
                 f"{d['n_alerts']} anomalous events from {d['first_ts']} to {d['last_ts']}, max score {d['max_score']:.2f}.",
                 "", "## Attack path", "", "| when | who | from | to | how | score | reasons |", "|---|---|---|---|---|---|---|"]
        for step in d["attack_path"]:
            lines.append(f"| {step['when']} | {step['who'] or ''} | {step['from'] or ''} | {step['to'] or ''} | "
                         f"{step['how']} | {step['score']:.2f} | {'; '.join(step['reasons'])} |")
        lines += ["", "## Entities", ""]
        lines += [f"- {kind.replace('_', ' ')}: {', '.join(names) or 'none'}" for kind, names in d["entities"].items()]
        lines += ["", "## Blast radius", ""]
        for row in d["blast_radius"]:
            lines.append(f"- {row['entity']} reached {row['n_reached']} entities in {row['events']} events: "
                         f"{', '.join(row['reached'][:20])}{' ...' if row['n_reached'] > 20 else ''}")
        return "\n".join(lines) + "\n"

    def to_svg(self, width: int = 760, height: int = 480) -> str:
        """The incident subgraph: anomalous edges in red, numbered in time order, blast-radius
        edges in grey; compromised entities filled."""
        edges: list[tuple[str, str, str, bool]] = []
        for n, step in enumerate(self.attack_path(), start=1):
            src = step["from"] or step["who"]
            if src and step["to"]:
                edges.append((src, step["to"], str(n), True))
                if step["who"] and step["who"] != src:
                    edges.append((step["who"], src, "", True))
        anomalous = {e[0] for e in edges} | {e[1] for e in edges}
        for row in self.blast_radius():
            for target in row["reached"][:8]:
                if (row["entity"], target) not in {(a, b) for a, b, _, _ in edges}:
                    edges.append((row["entity"], target, "", False))
        nodes = list(dict.fromkeys([n for e in edges for n in e[:2]]))[:60]
        pos = {}
        cx, cy, r = width / 2, height / 2, min(width, height) / 2 - 60
        for i, name in enumerate(nodes):
            angle = 2 * math.pi * i / max(len(nodes), 1)
            pos[name] = (cx + r * math.cos(angle), cy + r * math.sin(angle))
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'viewBox="0 0 {width} {height}" role="img" aria-label="incident {html.escape(self.incident_id)} subgraph">',
               '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
               'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
               f'<rect width="{width}" height="{height}" fill="#fff"/>']
        for a, b, label, bad in sorted(edges, key=lambda e: e[3]):
            if a not in pos or b not in pos:
                continue
            (x1, y1), (x2, y2) = pos[a], pos[b]
            colour, stroke = ("#c0392b", 2.5) if bad else ("#bbb", 1)
            out.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="{colour}" '
                       f'stroke-width="{stroke}" marker-end="url(#arrow)"/>')
            if label:
                out.append(f'<text x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2 - 4:.0f}" font-size="13" '
                           f'font-family="sans-serif" fill="#c0392b" font-weight="bold">{label}</text>')
        for name, (x, y) in pos.items():
            fill = "#f5b7b1" if name in anomalous else "#eaf2f8"
            out.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="9" fill="{fill}" stroke="#333"/>')
            out.append(f'<text x="{x + 12:.0f}" y="{y + 4:.0f}" font-size="11" font-family="sans-serif">'
                       f'{html.escape(name)}</text>')
        out.append("</svg>")
        return "\n".join(out)

    def to_html(self) -> str:
        d = self.to_dict()
        rows = "\n".join(
            f"<tr><td>{n}</td><td>{html.escape(s['when'])}</td><td>{html.escape(s['who'] or '')}</td>"
            f"<td>{html.escape(s['from'] or '')}</td><td>{html.escape(s['to'] or '')}</td><td>{html.escape(s['how'])}</td>"
            f"<td>{s['score']:.2f}</td><td>{html.escape('; '.join(s['reasons']))}</td></tr>"
            for n, s in enumerate(d["attack_path"], start=1)
        )
        blast = "\n".join(
            f"<li><b>{html.escape(b['entity'])}</b> reached {b['n_reached']} entities in {b['events']} events: "
            f"{html.escape(', '.join(b['reached'][:30]))}</li>" for b in d["blast_radius"]
        )
        entities = "".join(f"<li>{k.replace('_', ' ')}: {html.escape(', '.join(v) or 'none')}</li>"
                           for k, v in d["entities"].items())
        iid = html.escape(self.incident_id)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Incident {iid}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}} th{{background:#f4f4f4}}</style>
</head><body>
<h1>Incident {iid}</h1>
<p>{d['n_alerts']} anomalous events from {html.escape(d['first_ts'])} to {html.escape(d['last_ts'])};
max score {d['max_score']:.2f}. <a href="/incidents/{iid}">JSON</a> · <a href="/incidents/{iid}.md">Markdown</a>
· <a href="/incidents/{iid}.svg">SVG</a> · <a href="/incidents">all incidents</a></p>
<h2>Attack path</h2>
<table id="attack-path"><tr><th>#</th><th>when</th><th>who</th><th>from</th><th>to</th><th>how</th><th>score</th><th>reasons</th></tr>
{rows}
</table>
<h2>Incident subgraph</h2>
{self.to_svg()}
<h2>Entities</h2><ul>{entities}</ul>
<h2>Blast radius</h2><ul id="blast-radius">{blast}</ul>
</body></html>
"""


def _top(items: list[dict], key: str, k: int) -> list[dict]:
    return sorted(items, key=lambda x: -x[key])[:k]


class IncidentTracker:
    """Groups alerts into incidents as they arrive (module docstring)."""

    def __init__(self, horizon_s: float = 4 * 3600.0, window_s: float = 2 * 3600.0, max_incidents: int = 1000) -> None:
        self.horizon_s = horizon_s
        self.window_s = window_s
        self.max_incidents = max_incidents
        self.incidents: dict[str, Incident] = {}
        self._next = 1
        self._merged: dict[str, str] = {}  # merged incident id -> the incident it went into
        self.lock = threading.RLock()  # the scorer adds, the explainer refreshes, the service reads

    @staticmethod
    def _linked(alert: dict, incident: Incident) -> bool:
        """Same account (not a shared one such as SYSTEM), same source host, or a hop: the alert
        starts from a host an alert of the incident logged on to. Alerts that only share a
        destination (a file server, a domain controller, a popular site) are not linked: that
        would merge unrelated users into one incident."""
        e = alert["event"]
        if e["who"] and e["who"] not in SHARED_ACCOUNTS and e["who"] in incident.link_accounts:
            return True
        return bool(e["from"] and (e["from"] in incident.link_sources or e["from"] in incident.link_hops))

    def find(self, incident_id: str) -> Incident | None:
        """The incident with this id, following merges."""
        seen = 0
        while incident_id in self._merged and seen < 100:
            incident_id, seen = self._merged[incident_id], seen + 1
        return self.incidents.get(incident_id)

    def add(self, alert: dict, windows: Any = None) -> Incident:
        """Put ``alert`` in an incident (new, joined, or several merged) and refresh its blast radius
        from ``windows`` (the scorer's current state), which holds the recent events."""
        earliest = pd.Timestamp(alert["ts"]).timestamp() - self.horizon_s
        matches = [inc for inc in self.incidents.values() if inc.last_s >= earliest and self._linked(alert, inc)]
        if not matches:
            incident = Incident(f"INC-{self._next:05d}")
            self._next += 1
            self.incidents[incident.incident_id] = incident
            if len(self.incidents) > self.max_incidents:
                self.incidents.pop(next(iter(self.incidents)))
        else:
            incident = matches[0]
            for other in matches[1:]:
                for a in other.alerts:
                    incident.take(a)
                for entity, reached in other.blast.items():
                    merged = incident.blast.setdefault(entity, {})
                    for k, v in reached.items():
                        merged[k] = max(merged.get(k, 0), v)
                incident.dropped += other.dropped
                self.incidents.pop(other.incident_id)
                if len(self._merged) >= 10 * self.max_incidents:
                    self._merged.pop(next(iter(self._merged)))
                self._merged[other.incident_id] = incident.incident_id
                for a in other.alerts:
                    a["incident_id"] = incident.incident_id
        incident.take(alert)
        if windows is not None:
            self.refresh_blast(incident, windows.events)
        return incident

    def refresh_blast(self, incident: Incident, events: pd.DataFrame) -> None:
        """What the compromised accounts and hosts of ``incident`` reached in ``events``."""
        self.refresh_blasts([incident], events)

    def refresh_blasts(self, incidents: list[Incident], events: pd.DataFrame) -> None:
        """Blast radius of ``incidents`` from ``events`` (the scorer's window state): per
        compromised account (not a shared one) and host (where anomalous events came from or
        logged on), every destination or process it reached there, with event counts. Counted
        once for all incidents; counts only grow as the window slides on."""
        if not incidents or events.empty:
            return
        target = events["dst_host"].astype("string").fillna(events["process"].astype("string"))
        reached_by: dict[str, dict[str, int]] = {}
        for column in ("user", "src_host"):
            frame = pd.DataFrame({"e": events[column].astype("string"), "t": target}).dropna()
            frame = frame[frame["e"] != frame["t"]]
            for (entity, name), n in frame.value_counts(sort=False).items():
                reached_by.setdefault(f"{column}:{entity}", {})[name] = int(n)
        for incident in incidents:
            compromised = [f"user:{a}" for a in incident.link_accounts - SHARED_ACCOUNTS]
            compromised += [f"src_host:{h}" for h in incident.link_sources | incident.link_hops]
            for key in compromised:
                reached = reached_by.get(key)
                if reached is None:
                    continue
                slot = incident.blast.setdefault(key.split(":", 1)[1], {})
                for name, n in reached.items():
                    if len(slot) < MAX_BLAST_TARGETS or name in slot:
                        slot[str(name)] = max(slot.get(str(name), 0), int(n))

    def summaries(self) -> list[dict]:
        return [
            {"incident_id": i.incident_id, "first_ts": i.first_ts, "last_ts": i.last_ts, "n_alerts": len(i.alerts) + i.dropped,
             "max_score": max(a["score"] for a in i.alerts), "evidence": round(i.evidence, 4),
             "entities": i.entities()}
            for i in self.incidents.values()
        ]
