"""A small builder for the BPMN files HMS ships, with an automatic left-to-right layout
(pool, lanes, shapes and edges) so bpmn-js can display and edit what we generate.

Shipped pathways are data in workflows/; this builder only writes them. Once a department
head edits a pathway in the browser, the published version in the database is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

SIZES = {"event": (36, 36), "gateway": (50, 50), "task": (110, 80)}
COL, LANE_H, LEFT = 150, 140, 80


@dataclass
class Node:
    id: str
    name: str
    kind: str  # startEvent, endEvent, boundaryEvent, userTask, serviceTask, scriptTask, exclusiveGateway, parallelGateway, callActivity
    lane: str
    body: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> str:
        if self.kind.endswith("Event"):
            return "event"
        if self.kind.endswith("Gateway"):
            return "gateway"
        return "task"


@dataclass
class Flow:
    id: str
    source: str
    target: str
    condition: str | None = None
    name: str | None = None


class Process:
    def __init__(self, key: str, name: str, lanes: list[str]):
        self.key, self.name, self.lanes = key, name, lanes
        self.nodes: dict[str, Node] = {}
        self.flows: list[Flow] = []
        self.defaults: dict[str, str] = {}
        self.messages: list[str] = []

    # --- elements -----------------------------------------------------------------
    def _add(self, node: Node) -> str:
        if node.lane not in self.lanes:
            raise ValueError(f"{node.id}: unknown lane {node.lane}")
        if node.id in self.nodes:
            raise ValueError(f"duplicate id {node.id}")
        self.nodes[node.id] = node
        return node.id

    def start(self, id, name, lane):
        return self._add(Node(id, name, "startEvent", lane))

    def end(self, id, name, lane):
        return self._add(Node(id, name, "endEvent", lane))

    def user(self, id, name, lane, *, form=None, var=None, instructions=None, **props):
        ext = []
        if instructions:
            ext.append(f"<spiffworkflow:instructionsForEndUser>{escape(instructions)}</spiffworkflow:instructionsForEndUser>")
        if var:
            ext.append(f"<spiffworkflow:variableName>{escape(var)}</spiffworkflow:variableName>")
        allprops = ({"formKey": form} if form else {}) | props
        if allprops:
            ext.append("<spiffworkflow:properties>" + "".join(
                f"<spiffworkflow:property name={quoteattr(k)} value={quoteattr(str(v))} />"
                for k, v in allprops.items()) + "</spiffworkflow:properties>")
        body = f"<bpmn:extensionElements>{''.join(ext)}</bpmn:extensionElements>" if ext else ""
        return self._add(Node(id, name, "userTask", lane, body))

    def service(self, id, name, lane, *, op, params: dict[str, str], result: str | None = None):
        ps = "".join(f"<spiffworkflow:parameter id={quoteattr(k)} type=\"any\" value={quoteattr(v)} />"
                     for k, v in params.items())
        res = f" resultVariable={quoteattr(result)}" if result else ""
        body = (f"<bpmn:extensionElements><spiffworkflow:serviceTaskOperator id={quoteattr(op)}{res}>"
                f"<spiffworkflow:parameters>{ps}</spiffworkflow:parameters>"
                f"</spiffworkflow:serviceTaskOperator></bpmn:extensionElements>")
        return self._add(Node(id, name, "serviceTask", lane, body))

    def script(self, id, name, lane, script: str):
        return self._add(Node(id, name, "scriptTask", lane, f"<bpmn:script>{escape(script)}</bpmn:script>",
                              {"scriptFormat": "python"}))

    def xor(self, id, name, lane):
        return self._add(Node(id, name, "exclusiveGateway", lane))

    def fork(self, id, name, lane):
        return self._add(Node(id, name, "parallelGateway", lane))

    def boundary_timer(self, id, name, attached_to: str, when: str, *, cancel: bool = True):
        """A timer on the edge of a task: `when` is an expression giving an ISO date-time
        (e.g. "escalate_at"); an interrupting timer takes the token away from the task."""
        lane = self.nodes[attached_to].lane
        body = (f"<bpmn:timerEventDefinition id=\"{id}_def\"><bpmn:timeDate>{escape(when)}</bpmn:timeDate>"
                f"</bpmn:timerEventDefinition>")
        return self._add(Node(id, name, "boundaryEvent", lane, body,
                              {"attachedToRef": attached_to, "cancelActivity": "true" if cancel else "false"}))

    def call(self, id, name, lane, called: str):
        return self._add(Node(id, name, "callActivity", lane, attrs={"calledElement": called}))

    def flow(self, source, target, condition=None, *, default=False, name=None):
        fid = f"f_{source}_{target}"
        if any(f.id == fid for f in self.flows):
            fid += f"_{len(self.flows)}"
        self.flows.append(Flow(fid, source, target, condition, name))
        if default:
            self.defaults[source] = fid
        return fid

    def chain(self, *ids):
        for a, b in zip(ids, ids[1:]):
            self.flow(a, b)

    # --- layout ---------------------------------------------------------------------
    def _columns(self) -> dict[str, int]:
        """Longest-path rank from the start, ignoring back edges (found by DFS)."""
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for f in self.flows:
            out[f.source].append(f.target)
        for n in self.nodes.values():
            if n.kind == "boundaryEvent":
                out[n.attrs["attachedToRef"]].append(n.id)
        starts = [n.id for n in self.nodes.values() if n.kind == "startEvent"]
        back, state = set(), {}

        def dfs(n):
            state[n] = 1
            for m in out[n]:
                if state.get(m) == 1:
                    back.add((n, m))
                elif m not in state:
                    dfs(m)
            state[n] = 2

        for s in starts:
            dfs(s)
        rank = {n: 0 for n in self.nodes}
        edges = [(a, b) for a in out for b in out[a] if (a, b) not in back]
        order = self._topo(edges)
        for n in order:
            for m in out[n]:
                if (n, m) not in back:
                    rank[m] = max(rank[m], rank[n] + 1)
        self._back = back
        return rank

    def _topo(self, edges):
        indeg = {n: 0 for n in self.nodes}
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for a, b in edges:
            out[a].append(b)
            indeg[b] += 1
        ready = [n for n, d in indeg.items() if d == 0]
        order = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for m in out[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
        return order

    def _bounds(self):
        rank = self._columns()
        used: dict[tuple[int, str], int] = {}
        pos = {}
        for nid, node in self.nodes.items():
            w, h = SIZES[node.shape]
            lane_i = self.lanes.index(node.lane)
            slot = used.get((rank[nid], node.lane), 0)
            used[(rank[nid], node.lane)] = slot + 1
            cx = LEFT + 60 + rank[nid] * COL + 75
            cy = lane_i * LANE_H + LANE_H // 2 + slot * 18
            pos[nid] = (cx - w // 2, cy - h // 2, w, h)
        for nid, node in self.nodes.items():
            if node.kind == "boundaryEvent":  # sits on the bottom edge of its task
                tx, ty, tw, th = pos[node.attrs["attachedToRef"]]
                w, h = SIZES["event"]
                pos[nid] = (tx + tw - w - 6, ty + th - h // 2, w, h)
        width = LEFT + 60 + (max(rank.values()) + 1) * COL + 60
        return pos, width

    # --- XML ------------------------------------------------------------------------
    def to_xml(self) -> str:
        pos, width = self._bounds()
        incoming: dict[str, list[str]] = {n: [] for n in self.nodes}
        outgoing: dict[str, list[str]] = {n: [] for n in self.nodes}
        for f in self.flows:
            outgoing[f.source].append(f.id)
            incoming[f.target].append(f.id)
        lines = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
                 'xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" '
                 'xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" '
                 'xmlns:di="http://www.omg.org/spec/DD/20100524/DI" '
                 'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" '
                 f'id="Definitions_{self.key}" targetNamespace="http://bpmn.io/schema/bpmn" '
                 'exporter="hms tools/bpmn_builder.py" exporterVersion="1">',
                 f'  <bpmn:collaboration id="Collaboration_{self.key}">',
                 f'    <bpmn:participant id="Participant_{self.key}" name={quoteattr(self.name)} processRef="{self.key}" />',
                 '  </bpmn:collaboration>',
                 f'  <bpmn:process id="{self.key}" name={quoteattr(self.name)} isExecutable="true">',
                 f'    <bpmn:laneSet id="LaneSet_{self.key}">']
        for lane in self.lanes:
            lid = "Lane_" + lane.replace(" ", "_")
            refs = "".join(f"<bpmn:flowNodeRef>{n.id}</bpmn:flowNodeRef>" for n in self.nodes.values() if n.lane == lane)
            lines.append(f'      <bpmn:lane id="{lid}" name={quoteattr(lane)}>{refs}</bpmn:lane>')
        lines.append('    </bpmn:laneSet>')
        for n in self.nodes.values():
            attrs = "".join(f" {k}={quoteattr(v)}" for k, v in n.attrs.items())
            if n.id in self.defaults:
                attrs += f' default="{self.defaults[n.id]}"'
            flows = "".join(f"<bpmn:incoming>{i}</bpmn:incoming>" for i in incoming[n.id]) + \
                "".join(f"<bpmn:outgoing>{o}</bpmn:outgoing>" for o in outgoing[n.id])
            body = n.body
            if n.kind in ("scriptTask", "boundaryEvent"):  # the schema wants these after incoming/outgoing
                lines.append(f'    <bpmn:{n.kind} id="{n.id}" name={quoteattr(n.name)}{attrs}>{flows}{body}</bpmn:{n.kind}>')
            else:
                lines.append(f'    <bpmn:{n.kind} id="{n.id}" name={quoteattr(n.name)}{attrs}>{body}{flows}</bpmn:{n.kind}>')
        for f in self.flows:
            name = f" name={quoteattr(f.name)}" if f.name else ""
            if f.condition:
                lines.append(f'    <bpmn:sequenceFlow id="{f.id}"{name} sourceRef="{f.source}" targetRef="{f.target}">'
                             f'<bpmn:conditionExpression>{escape(f.condition)}</bpmn:conditionExpression></bpmn:sequenceFlow>')
            else:
                lines.append(f'    <bpmn:sequenceFlow id="{f.id}"{name} sourceRef="{f.source}" targetRef="{f.target}" />')
        lines.append('  </bpmn:process>')
        lines += self._diagram(pos, width)
        lines.append('</bpmn:definitions>')
        return "\n".join(lines) + "\n"

    def _diagram(self, pos, width) -> list[str]:
        height = len(self.lanes) * LANE_H
        out = [f'  <bpmndi:BPMNDiagram id="Diagram_{self.key}">',
               f'    <bpmndi:BPMNPlane id="Plane_{self.key}" bpmnElement="Collaboration_{self.key}">',
               f'      <bpmndi:BPMNShape id="Participant_{self.key}_di" bpmnElement="Participant_{self.key}" isHorizontal="true">'
               f'<dc:Bounds x="0" y="0" width="{width}" height="{height}" /></bpmndi:BPMNShape>']
        for i, lane in enumerate(self.lanes):
            lid = "Lane_" + lane.replace(" ", "_")
            out.append(f'      <bpmndi:BPMNShape id="{lid}_di" bpmnElement="{lid}" isHorizontal="true">'
                       f'<dc:Bounds x="30" y="{i * LANE_H}" width="{width - 30}" height="{LANE_H}" /></bpmndi:BPMNShape>')
        for nid, (x, y, w, h) in pos.items():
            extra = ' isMarkerVisible="true"' if self.nodes[nid].kind == "exclusiveGateway" else ""
            out.append(f'      <bpmndi:BPMNShape id="{nid}_di" bpmnElement="{nid}"{extra}>'
                       f'<dc:Bounds x="{x}" y="{y}" width="{w}" height="{h}" /></bpmndi:BPMNShape>')
        for f in self.flows:
            sx, sy, sw, sh = pos[f.source]
            tx, ty, tw, th = pos[f.target]
            if self.nodes[f.source].kind == "boundaryEvent":
                a, b = (sx + sw // 2, sy + sh), (tx, ty + th // 2)
                pts = [a, (a[0], b[1]), b] if a[1] != b[1] else [a, b]
            elif (f.source, f.target) in self._back:
                top = min(sy, ty) - 25
                pts = [(sx + sw // 2, sy), (sx + sw // 2, top), (tx + tw // 2, top), (tx + tw // 2, ty)]
            else:
                a, b = (sx + sw, sy + sh // 2), (tx, ty + th // 2)
                pts = [a, b] if a[1] == b[1] else [a, ((a[0] + b[0]) // 2, a[1]), ((a[0] + b[0]) // 2, b[1]), b]
            wps = "".join(f'<di:waypoint x="{x}" y="{y}" />' for x, y in pts)
            out.append(f'      <bpmndi:BPMNEdge id="{f.id}_di" bpmnElement="{f.id}">{wps}</bpmndi:BPMNEdge>')
        out += ['    </bpmndi:BPMNPlane>', '  </bpmndi:BPMNDiagram>']
        return out
