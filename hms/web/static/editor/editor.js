/* HMS pathway editor: bpmn-js Modeler + a small side panel for what HMS needs.
 *
 * The panel sets, without touching XML: lane -> role, user task -> form, due time and
 * priority, service task -> operation and its parameters, flow conditions (checked live in
 * the sandbox), timer durations, called pathway, script (administrators publish scripts).
 * Everything goes through bpmn-js's modeling commands, so undo/redo work.
 * Saving sends the XML as the draft; the lint's problems come back and are drawn on the
 * elements (a red badge and outline) and listed under "Checks".
 */
(function () {
  'use strict';

  var data = JSON.parse(document.getElementById('hms-editor-data').textContent);
  var cat = data.catalogue;
  var SPIFF = 'spiffworkflow:';

  var modeler = new window.BpmnJS({
    container: '#canvas',
    moddleExtensions: { spiffworkflow: data.moddle }
  });
  window.hmsModeler = modeler;  // for scripts and browser tests

  var modeling = modeler.get('modeling');
  var moddle = modeler.get('moddle');
  var registry = modeler.get('elementRegistry');
  var overlays = modeler.get('overlays');
  var canvas = modeler.get('canvas');
  var selection = modeler.get('selection');
  var eventBus = modeler.get('eventBus');
  var bpmnReplace = modeler.get('bpmnReplace');

  var statusEl = document.getElementById('editor-status');
  var panelBody = document.getElementById('panel-body');
  var panelTitle = document.getElementById('panel-title');
  var noteInput = document.getElementById('publish-note');

  var state = {
    checksum: data.draft ? data.draft.checksum : null,
    dirty: false,
    problems: data.draft ? (data.draft.problems || []) : [],
    current: null,
    editing: false,
    marked: [],
    uid: 0
  };

  // --- small helpers ---------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') node.textContent = attrs[k];
      else if (k === 'className') node.className = attrs[k];
      else if (attrs[k] !== undefined && attrs[k] !== null && attrs[k] !== false) node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
    return node;
  }

  function nextId(prefix) { state.uid += 1; return 'hms-' + prefix + '-' + state.uid; }

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = 'status ' + (kind || '');
  }

  function is(element, type) {
    var bo = element && (element.businessObject || element);
    return !!(bo && bo.$instanceOf && bo.$instanceOf(type));
  }

  function label(bo) {
    return bo.name ? bo.name + ' (' + bo.id + ')' : bo.id;
  }

  function edit(fn) {
    state.editing = true;
    try { return fn(); } finally { state.editing = false; }
  }

  function errorText(body, fallback) {
    return (body && body.error && body.error.message) || fallback || 'The server refused the request.';
  }

  function debounce(fn, ms) {
    var t = null;
    return function () {
      var args = arguments;
      clearTimeout(t);
      t = setTimeout(function () { fn.apply(null, args); }, ms);
    };
  }

  function api(url, options) {
    options = options || {};
    options.credentials = 'same-origin';
    options.headers = Object.assign({ 'Accept': 'application/json' }, options.headers || {});
    return fetch(url, options).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) {
        return { status: resp.status, ok: resp.ok, body: body };
      });
    });
  }

  // --- extension elements (spiffworkflow:*) ------------------------------------------------

  function extValues(bo) {
    return (bo.extensionElements && bo.extensionElements.values) || [];
  }

  function getExt(bo, type) {
    return extValues(bo).filter(function (v) { return v.$type === SPIFF + type; })[0];
  }

  function ensureExtensionElements(element) {
    var bo = element.businessObject;
    if (!bo.extensionElements) {
      var ext = moddle.create('bpmn:ExtensionElements', { values: [] });
      modeling.updateModdleProperties(element, bo, { extensionElements: ext });
    }
    return bo.extensionElements;
  }

  function addExt(element, child) {
    var ext = ensureExtensionElements(element);
    modeling.updateModdleProperties(element, ext, { values: ext.values.concat([child]) });
    return child;
  }

  function removeExt(element, child) {
    var ext = element.businessObject.extensionElements;
    if (!ext) return;
    modeling.updateModdleProperties(element, ext, { values: ext.values.filter(function (v) { return v !== child; }) });
  }

  function getProperty(bo, name) {
    var props = getExt(bo, 'Properties');
    var prop = props && (props.properties || []).filter(function (p) { return p.name === name; })[0];
    return prop ? prop.value : '';
  }

  function setProperty(element, name, value) {
    var bo = element.businessObject;
    value = (value || '').trim();
    var props = getExt(bo, 'Properties');
    if (!props) {
      if (!value) return;
      props = addExt(element, moddle.create(SPIFF + 'Properties', { properties: [] }));
    }
    var list = props.properties || [];
    var prop = list.filter(function (p) { return p.name === name; })[0];
    if (!value) {
      if (prop) modeling.updateModdleProperties(element, props, { properties: list.filter(function (p) { return p !== prop; }) });
      return;
    }
    if (prop) modeling.updateModdleProperties(element, prop, { value: value });
    else modeling.updateModdleProperties(element, props, {
      properties: list.concat([moddle.create(SPIFF + 'Property', { name: name, value: value })])
    });
  }

  function getBody(bo, type) {
    var found = getExt(bo, type);
    return found ? (found.value || '') : '';
  }

  function setBody(element, type, value) {
    var found = getExt(element.businessObject, type);
    value = value || '';
    if (!value.trim()) { if (found) removeExt(element, found); return; }
    if (found) modeling.updateModdleProperties(element, found, { value: value });
    else addExt(element, moddle.create(SPIFF + type, { value: value }));
  }

  // --- live checks in the sandbox -----------------------------------------------------------

  function checker(kind, messageEl, input) {
    return debounce(function (value) {
      if (!value || !value.trim()) { messageEl.textContent = ''; messageEl.className = 'check'; input.removeAttribute('aria-invalid'); return; }
      api(data.urls.check, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ expression: value, kind: kind })
      }).then(function (r) {
        var ok = r.ok && r.body.ok;
        messageEl.textContent = ok ? 'Checked: valid.' : (r.body.message || errorText(r.body));
        messageEl.className = 'check ' + (ok ? 'ok' : 'error');
        if (ok) input.removeAttribute('aria-invalid'); else input.setAttribute('aria-invalid', 'true');
      });
    }, 300);
  }

  // --- panel fields ---------------------------------------------------------------------------

  function field(text, control, hint, extra) {
    var id = control.id || nextId('f');
    control.id = id;
    var lab = el('label', { 'for': id, text: text });
    var wrap = el('div', { className: 'field' }, [lab, control]);
    if (hint) {
      var h = el('span', { className: 'hint', id: id + '-hint', text: hint });
      control.setAttribute('aria-describedby', id + '-hint');
      wrap.appendChild(h);
    }
    (extra || []).forEach(function (x) { wrap.appendChild(x); });
    return wrap;
  }

  function textInput(value, onChange, attrs) {
    var input = el('input', Object.assign({ type: 'text' }, attrs || {}));
    input.value = value || '';
    input.addEventListener('change', function () { edit(function () { onChange(input.value); }); });
    return input;
  }

  function textArea(value, onChange, attrs) {
    var area = el('textarea', attrs || {});
    area.value = value || '';
    area.addEventListener('change', function () { edit(function () { onChange(area.value); }); });
    return area;
  }

  function select(options, value, onChange, attrs) {
    var s = el('select', attrs || {});
    var found = false;
    options.forEach(function (o) {
      var opt = el('option', { value: o.value, text: o.label });
      if (o.value === value) { opt.selected = true; found = true; }
      s.appendChild(opt);
    });
    if (!found && value) {
      var unknown = el('option', { value: value, text: value + ' (unknown)' });
      unknown.selected = true;
      s.insertBefore(unknown, s.firstChild.nextSibling);
    }
    s.addEventListener('change', function () { edit(function () { onChange(s.value); }); });
    return s;
  }

  function checkedInput(kind, value, onChange, attrs) {
    var input = textInput(value, onChange, attrs);
    var msg = el('span', { className: 'check', 'aria-live': 'polite' });
    var check = checker(kind, msg, input);
    input.addEventListener('input', function () { check(input.value); });
    if (value) check(value);
    return { input: input, message: msg };
  }

  // --- what each kind of element offers -------------------------------------------------------

  var TASK_TYPES = [
    { value: 'bpmn:UserTask', label: 'User task (a person fills in a form)' },
    { value: 'bpmn:ManualTask', label: 'Manual task (a person confirms it is done)' },
    { value: 'bpmn:ServiceTask', label: 'Service task (HMS runs an operation)' },
    { value: 'bpmn:CallActivity', label: 'Call another pathway' },
    { value: 'bpmn:ScriptTask', label: 'Script task (administrators only)' },
    { value: 'bpmn:Task', label: 'Untyped task (not allowed: choose a type)' }
  ];

  function roleKey(name) {
    return (name || '').trim().toLowerCase().replace(/[ -]/g, '_');
  }

  function lanePanel(element, body) {
    var bo = element.businessObject;
    var current = '';
    cat.roles.forEach(function (r) { if (roleKey(bo.name) === r.role) current = r.label; });
    var options = [{ value: '', label: 'Choose the role…' }].concat(cat.roles.map(function (r) {
      return { value: r.label, label: r.label };
    }));
    body.appendChild(field('Role that does the work in this lane',
      select(options, current || bo.name || '', function (v) { if (v) modeling.updateLabel(element, v); }),
      'Its tasks appear in the work queue of this role.'));
  }

  function typePanel(element, body) {
    var bo = element.businessObject;
    body.appendChild(field('Type of step', select(TASK_TYPES, bo.$type, function (v) {
      if (v === bo.$type) return;
      var oldId = bo.id;
      var replaced = bpmnReplace.replaceElement(element, { type: v });
      try { modeling.updateProperties(replaced, { id: oldId }); } catch (e) { /* keep the new id */ }
      selection.select(replaced);
    })));
  }

  function humanTaskPanel(element, body) {
    var bo = element.businessObject;
    if (is(element, 'bpmn:UserTask')) {
      var forms = [{ value: '', label: 'No form (a plain "done")' }].concat(cat.forms.map(function (f) {
        return { value: f.key, label: f.title + ' (' + f.key + ', v' + f.version + ')' };
      }));
      body.appendChild(field('Form', select(forms, getProperty(bo, 'formKey'), function (v) {
        setProperty(element, 'formKey', v);
      }, { id: 'hms-form-select' }), 'What the person fills in.'));
    }
    var due = checkedInput('duration', getProperty(bo, 'due_in'), function (v) { setProperty(element, 'due_in', v); },
      { placeholder: 'e.g. PT30M, PT4H, P1D' });
    body.appendChild(field('Due within', due.input, 'ISO-8601 duration from when the task opens; shown as overdue after.', [due.message]));
    var priorities = [{ value: '', label: 'Routine (default)' }, { value: 'emergency', label: '1 – Emergency' },
      { value: 'urgent', label: '2 – Urgent' }, { value: 'routine', label: '3 – Routine' }, { value: 'low', label: '4 – Low' }];
    body.appendChild(field('Priority', select(priorities, getProperty(bo, 'priority'), function (v) {
      setProperty(element, 'priority', v);
    }), 'Queues sort by priority, then age.'));
    body.appendChild(field('Instructions for staff', textArea(getBody(bo, 'InstructionsForEndUser'), function (v) {
      setBody(element, 'InstructionsForEndUser', v);
    }, { rows: 3 })));
  }

  function servicePanel(element, body) {
    var bo = element.businessObject;
    var operator = getExt(bo, 'ServiceTaskOperator');
    var opName = operator ? operator.id : '';
    var options = [{ value: '', label: 'Choose the operation…' }].concat(cat.operations.map(function (o) {
      return { value: o.name, label: o.name + (o.description ? ' – ' + o.description : '') };
    }));
    body.appendChild(field('Operation', select(options, opName, function (v) { setOperator(element, v); renderPanel(element); }),
      'What HMS does at this step.'));
    if (!operator) return;
    var op = cat.operations.filter(function (o) { return o.name === opName; })[0];
    var given = {};
    ((operator.parameterList && operator.parameterList.parameters) || []).forEach(function (p) { given[p.id] = p; });
    var names = op ? Object.keys(op.params) : [];
    Object.keys(given).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
    if (names.length) body.appendChild(el('h3', { text: 'Parameters' }));
    names.forEach(function (name) {
      var required = op && op.params[name];
      var c = checkedInput('expression', given[name] ? given[name].value : '', function (v) { setParameter(element, name, v); },
        { placeholder: 'expression, e.g. patient_id or "CBC"' });
      var hint = (required ? 'Required. ' : '') + (op && !(name in op.params) ? 'This operation does not take it. ' : '') +
        'A Python expression over the task data; text in quotes.';
      body.appendChild(field(name, c.input, hint, [c.message]));
    });
    body.appendChild(field('Result variable', textInput(operator.resultVariable || '', function (v) {
      modeling.updateModdleProperties(element, operator, { resultVariable: v.trim() || undefined });
    }), 'The task data name that receives the result (gateways can test it).'));
  }

  function setOperator(element, opName) {
    var bo = element.businessObject;
    var operator = getExt(bo, 'ServiceTaskOperator');
    if (!opName) { if (operator) removeExt(element, operator); return; }
    var existing = {};
    ((operator && operator.parameterList && operator.parameterList.parameters) || []).forEach(function (p) { existing[p.id] = p.value; });
    var op = cat.operations.filter(function (o) { return o.name === opName; })[0];
    var params = Object.keys((op && op.params) || {}).map(function (id) {
      return moddle.create(SPIFF + 'Parameter', { id: id, type: 'any', value: existing[id] || '' });
    });
    var list = moddle.create(SPIFF + 'Parameters', { parameters: params });
    if (operator) modeling.updateModdleProperties(element, operator, { id: opName, parameterList: list });
    else addExt(element, moddle.create(SPIFF + 'ServiceTaskOperator', { id: opName, parameterList: list }));
  }

  function setParameter(element, name, value) {
    var operator = getExt(element.businessObject, 'ServiceTaskOperator');
    if (!operator) return;
    var list = operator.parameterList;
    if (!list) {
      list = moddle.create(SPIFF + 'Parameters', { parameters: [] });
      modeling.updateModdleProperties(element, operator, { parameterList: list });
    }
    var param = (list.parameters || []).filter(function (p) { return p.id === name; })[0];
    if (param) modeling.updateModdleProperties(element, param, { value: value });
    else modeling.updateModdleProperties(element, list, {
      parameters: (list.parameters || []).concat([moddle.create(SPIFF + 'Parameter', { id: name, type: 'any', value: value })])
    });
  }

  function conditionField(flow, body, gateway) {
    var bo = flow.businessObject;
    var cond = bo.conditionExpression ? (bo.conditionExpression.body || '') : '';
    var c = checkedInput('expression', cond, function (v) {
      var expr = v.trim() ? moddle.create('bpmn:FormalExpression', { body: v.trim() }) : undefined;
      modeling.updateProperties(flow, { conditionExpression: expr });
    }, { placeholder: 'e.g. needs_lab == True' });
    var isDefault = gateway && gateway.businessObject.default === bo;
    body.appendChild(field('Condition', c.input, isDefault ? 'This is the default flow: taken when no condition holds.'
      : 'Taken when this is true. Checked in the sandbox as you type.', [c.message]));
  }

  function gatewayPanel(element, body) {
    if (!is(element, 'bpmn:ExclusiveGateway') && !is(element, 'bpmn:InclusiveGateway')) return;
    var outgoing = (element.outgoing || []).filter(function (c) { return is(c, 'bpmn:SequenceFlow'); });
    if (outgoing.length < 2) return;
    body.appendChild(el('h3', { text: 'Ways out' }));
    var group = 'hms-default-' + element.id;
    outgoing.forEach(function (flow) {
      var box = el('div', { className: 'flow' });
      var target = flow.target ? label(flow.target.businessObject) : '?';
      box.appendChild(el('div', { className: 'flow-title', text: (flow.businessObject.name ? flow.businessObject.name + ': ' : '') + 'to ' + target }));
      conditionField(flow, box, element);
      var radio = el('input', { type: 'radio', name: group, id: nextId('def') });
      radio.checked = element.businessObject.default === flow.businessObject;
      radio.addEventListener('change', function () {
        if (radio.checked) edit(function () { modeling.updateProperties(element, { 'default': flow.businessObject }); });
        renderPanel(element);
      });
      box.appendChild(el('label', { className: 'field radio', 'for': radio.id }, [radio, 'Default flow (when no condition holds)']));
      body.appendChild(box);
    });
  }

  function flowPanel(element, body) {
    var source = element.source;
    if (source && (is(source, 'bpmn:ExclusiveGateway') || is(source, 'bpmn:InclusiveGateway'))) {
      conditionField(element, body, source);
    }
  }

  function timerPanel(element, body) {
    var def = (element.businessObject.eventDefinitions || []).filter(function (d) { return is(d, 'bpmn:TimerEventDefinition'); })[0];
    if (!def) return;
    var kind = def.timeDate ? 'timeDate' : def.timeCycle ? 'timeCycle' : 'timeDuration';
    var expr = def[kind] ? (def[kind].body || '') : '';
    var literal = /^\s*(["'])(.*)\1\s*$/.exec(expr);
    var shown = literal ? literal[2] : (expr ? '=' + expr : '');
    var kinds = [{ value: 'timeDuration', label: 'After a duration' }, { value: 'timeDate', label: 'At a date and time' },
      { value: 'timeCycle', label: 'Repeating' }];
    var kindSelect = select(kinds, kind, function () {});
    var c = checkedInput(kind === 'timeDuration' ? 'duration' : 'expression', kind === 'timeDuration' ? shown : '',
      function () {}, { placeholder: 'e.g. PT4H or P1D' });
    if (kind !== 'timeDuration') c.input.value = shown;
    function apply() {
      var v = c.input.value.trim();
      var body = v.charAt(0) === '=' ? v.slice(1).trim() : (v ? '"' + v.replace(/"/g, '') + '"' : '');
      var props = { timeDuration: undefined, timeDate: undefined, timeCycle: undefined };
      if (body) props[kindSelect.value] = moddle.create('bpmn:FormalExpression', { body: body });
      edit(function () { modeling.updateModdleProperties(element, def, props); });
    }
    kindSelect.addEventListener('change', apply);
    c.input.addEventListener('change', apply);
    body.appendChild(el('h3', { text: 'Timer' }));
    body.appendChild(field('When', kindSelect));
    body.appendChild(field('Time', c.input, 'ISO-8601: PT30M, PT4H, P1D; a date 2025-01-31T09:00:00+05:00; repeating R3/PT4H. ' +
      'Start with = for an expression.', [c.message]));
  }

  function callPanel(element, body) {
    var bo = element.businessObject;
    var options = [{ value: '', label: 'Choose the pathway…' }].concat(cat.pathways.filter(function (k) { return k !== data.key; })
      .map(function (k) { return { value: k, label: k }; }));
    body.appendChild(field('Pathway it runs', select(options, bo.calledElement || '', function (v) {
      modeling.updateProperties(element, { calledElement: v || undefined });
    }), 'The latest published version of that pathway runs as one step.'));
  }

  function scriptPanel(element, body) {
    var bo = element.businessObject;
    var c = el('span', { className: 'check', 'aria-live': 'polite' });
    var area = textArea(bo.script || '', function (v) { modeling.updateProperties(element, { script: v, scriptFormat: 'python' }); },
      { rows: 6, spellcheck: 'false' });
    var check = checker('script', c, area);
    area.addEventListener('input', function () { check(area.value); });
    if (bo.script) check(bo.script);
    body.appendChild(field('Script', area, data.is_admin ? 'Runs in the sandbox.'
      : 'Only an administrator can publish a pathway with a script.', [c]));
  }

  function hooksPanel(element, body) {
    var bo = element.businessObject;
    var pre = getBody(bo, 'PreScript'), post = getBody(bo, 'PostScript');
    if (!data.is_admin && !pre && !post) return;
    var details = el('details', pre || post ? { open: 'open' } : {});
    details.appendChild(el('summary', { text: 'Scripts before and after (administrators)' }));
    details.appendChild(field('Before the task', textArea(pre, function (v) { setBody(element, 'PreScript', v); }, { rows: 3 })));
    details.appendChild(field('After the task', textArea(post, function (v) { setBody(element, 'PostScript', v); }, { rows: 3 })));
    body.appendChild(details);
  }

  function loopPanel(element, body) {
    var loop = element.businessObject.loopCharacteristics;
    if (!loop || !is(loop, 'bpmn:StandardLoopCharacteristics')) return;
    body.appendChild(el('h3', { text: 'Repeats' }));
    body.appendChild(field('Maximum rounds', textInput(loop.loopMaximum || '', function (v) {
      modeling.updateModdleProperties(element, loop, { loopMaximum: v.trim() || undefined });
    }, { inputmode: 'numeric' }), 'Required: a loop must stop after a whole number of rounds.'));
    var cond = loop.loopCondition ? (loop.loopCondition.body || '') : '';
    var c = checkedInput('expression', cond, function (v) {
      var expr = v.trim() ? moddle.create('bpmn:FormalExpression', { body: v.trim() }) : undefined;
      modeling.updateModdleProperties(element, loop, { loopCondition: expr });
    }, { placeholder: 'e.g. not done' });
    body.appendChild(field('Repeat while', c.input, 'Checked after each round.', [c.message]));
  }

  function processPanel(body) {
    var root = canvas.getRootElement();
    var rbo = root && root.businessObject;
    if (!rbo) return;
    var process = is(rbo, 'bpmn:Collaboration') ? (rbo.participants || []).map(function (p) { return p.processRef; })
      .filter(function (p) { return p && p.id === data.key; })[0] : rbo;
    panelTitle.textContent = 'Pathway';
    body.appendChild(el('p', { className: 'muted', text: 'Select an element in the diagram to edit it. Tab moves through these fields.' }));
    if (process) {
      body.appendChild(field('Pathway name', textInput(process.name || '', function (v) {
        modeling.updateModdleProperties(root, process, { name: v.trim() || undefined });
      })));
    }
  }

  function elementProblems(id) {
    return state.problems.filter(function (p) { return p.element_id === id; });
  }

  function renderPanel(element) {
    state.current = element || null;
    panelBody.textContent = '';
    if (!element || element.type === 'label') {
      processPanel(panelBody);
      return;
    }
    var bo = element.businessObject;
    var kind = bo.$type.replace('bpmn:', '').replace(/([a-z])([A-Z])/g, '$1 $2');
    panelTitle.textContent = kind;
    panelBody.appendChild(el('p', { className: 'element-id', text: 'id: ' + bo.id }));
    var mine = elementProblems(bo.id);
    if (mine.length) {
      panelBody.appendChild(el('ul', { className: 'element-problems', role: 'list' },
        mine.map(function (p) { return el('li', { text: p.message }); })));
    }
    if (!is(element, 'bpmn:Process') && !is(element, 'bpmn:Collaboration')) {
      panelBody.appendChild(field(is(element, 'bpmn:Lane') ? 'Lane name' : 'Name', textInput(bo.name || '', function (v) {
        modeling.updateLabel(element, v);
      }, { id: 'hms-name' })));
    }
    if (is(element, 'bpmn:Lane')) lanePanel(element, panelBody);
    if (is(element, 'bpmn:Task') || is(element, 'bpmn:CallActivity')) typePanel(element, panelBody);
    if (is(element, 'bpmn:UserTask') || is(element, 'bpmn:ManualTask')) humanTaskPanel(element, panelBody);
    if (is(element, 'bpmn:ServiceTask')) servicePanel(element, panelBody);
    if (is(element, 'bpmn:ScriptTask')) scriptPanel(element, panelBody);
    if (is(element, 'bpmn:CallActivity')) callPanel(element, panelBody);
    if (is(element, 'bpmn:Gateway')) gatewayPanel(element, panelBody);
    if (is(element, 'bpmn:SequenceFlow')) flowPanel(element, panelBody);
    if (is(element, 'bpmn:Event')) timerPanel(element, panelBody);
    if (is(element, 'bpmn:Activity')) loopPanel(element, panelBody);
    if (is(element, 'bpmn:Activity') && !is(element, 'bpmn:SubProcess')) hooksPanel(element, panelBody);
  }

  // --- problems on the diagram --------------------------------------------------------------

  function showProblems(problems) {
    state.problems = problems || [];
    overlays.remove({ type: 'hms-lint' });
    state.marked.forEach(function (id) { if (registry.get(id)) canvas.removeMarker(id, 'hms-lint-error'); });
    state.marked = [];
    var byId = {};
    state.problems.forEach(function (p) { if (p.element_id) (byId[p.element_id] = byId[p.element_id] || []).push(p); });
    Object.keys(byId).forEach(function (id) {
      var shape = registry.get(id);
      if (!shape) return;
      canvas.addMarker(shape, 'hms-lint-error');
      state.marked.push(id);
      var badge = el('div', { className: 'hms-lint-badge', 'data-element-id': id, title: byId[id].map(function (p) { return p.message; }).join('\n') },
        [byId[id].length > 1 ? '! ' + byId[id].length : '!']);
      var position = shape.waypoints ? { top: -12, left: -10 } : { top: -10, right: 10 };
      overlays.add(shape, 'hms-lint', { position: position, html: badge });
    });
    var list = document.getElementById('problem-list');
    var summary = document.getElementById('problems-summary');
    list.textContent = '';
    summary.textContent = state.problems.length
      ? state.problems.length + ' problem' + (state.problems.length === 1 ? '' : 's') + ' to fix before publishing:'
      : (state.checksum ? 'The draft passes every check.' : 'Save the draft to run the checks.');
    summary.className = state.problems.length ? 'field-error' : 'muted';
    state.problems.forEach(function (p) {
      var shape = p.element_id && registry.get(p.element_id);
      var item = el('li', { 'data-element-id': p.element_id || '' });
      if (shape) {
        var b = el('button', { type: 'button', className: 'link-like', text: p.message });
        b.addEventListener('click', function () { selection.select(shape); canvas.scrollToElement(shape); focusPanel(); });
        item.appendChild(b);
      } else {
        item.textContent = p.message;
      }
      list.appendChild(item);
    });
    if (state.current) renderPanel(registry.get(state.current.id) || null);
  }

  function focusPanel() {
    var first = panelBody.querySelector('input, select, textarea');
    if (first) first.focus();
  }

  // --- differences against the published version ---------------------------------------------

  function renderDiff(diff) {
    var box = document.getElementById('diff-body');
    box.textContent = '';
    if (!diff.added.length && !diff.removed.length && !diff.changed.length) {
      box.appendChild(el('p', { className: 'muted', text: 'No change in what the pathway does (' + diff.from + ' → ' + diff.to + ').' }));
      return;
    }
    box.appendChild(el('p', { className: 'muted', text: diff.from + ' → ' + diff.to }));
    var ul = el('ul', { className: 'diff' });
    function line(kind, cls, e, extra) {
      var li = el('li', { className: 'diff-' + kind }, [el('span', { className: 'badge ' + cls, text: kind }), ' ' + e.type + ' ',
        el('strong', { text: e.name || e.id }), ' ', el('code', { text: e.id })]);
      if (extra) li.appendChild(extra);
      ul.appendChild(li);
    }
    diff.added.forEach(function (e) { line('added', 'ok', e); });
    diff.removed.forEach(function (e) { line('removed', 'danger', e); });
    diff.changed.forEach(function (e) {
      var sub = el('ul', {}, e.changes.map(function (c) {
        return el('li', {}, [c.label + ': ', el('del', { text: c.old === null || c.old === undefined ? '—' : JSON.stringify(c.old) }),
          ' → ', el('ins', { text: c.new === null || c.new === undefined ? '—' : JSON.stringify(c.new) })]);
      }));
      line('changed', 'warn', e, sub);
    });
    box.appendChild(ul);
  }

  function loadDiff() {
    return api(data.urls.diff).then(function (r) { if (r.ok) renderDiff(r.body); });
  }

  // --- save and publish -----------------------------------------------------------------------

  function save() {
    setStatus('Saving…', 'busy');
    return modeler.saveXML({ format: true }).then(function (result) {
      var headers = { 'Content-Type': 'application/xml' };
      if (state.checksum) headers['If-Match'] = state.checksum;
      return api(data.urls.draft, { method: 'PUT', headers: headers, body: result.xml });
    }).then(function (r) {
      if (!r.ok) { setStatus(errorText(r.body, 'The draft was not saved.'), 'error'); return false; }
      state.checksum = r.body.draft.checksum;
      state.dirty = false;
      data.draft = r.body.draft;
      showProblems(r.body.problems);
      var n = r.body.problems.length;
      setStatus(n ? 'Draft saved, with ' + n + ' problem' + (n === 1 ? '' : 's') + ' to fix before publishing.'
        : 'Draft saved: it passes every check.', n ? 'error' : 'ok');
      document.getElementById('editor-origin').firstChild.textContent = 'Draft saved just now' +
        (r.body.draft.base_version ? ', started from v' + r.body.draft.base_version : '') + '. ';
      loadDiff();
      return true;
    }).catch(function (err) { setStatus('The draft was not saved: ' + err.message, 'error'); return false; });
  }

  function publish(force) {
    var note = noteInput.value.trim();
    if (!note) {
      setStatus('Write a note for the version first: what changed and why.', 'error');
      noteInput.focus();
      return Promise.resolve(false);
    }
    var ready = (state.dirty || !state.checksum) ? save() : Promise.resolve(true);
    return ready.then(function (ok) {
      if (!ok) return false;
      if (state.problems.length) { setStatus('Fix the problems listed under Checks, then publish.', 'error'); return false; }
      setStatus('Publishing…', 'busy');
      return api(data.urls.publish, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ note: note, force: !!force })
      }).then(function (r) {
        if (r.status === 201) {
          state.checksum = null;
          data.draft = null;
          noteInput.value = '';
          setStatus('Published as version ' + r.body.version + '. New patients follow it; running ones keep their version.', 'ok');
          document.getElementById('editor-origin').firstChild.textContent = 'Showing published version ' + r.body.version + '. ';
          document.getElementById('diff-body').textContent = 'Published as version ' + r.body.version + '.';
          showProblems([]);
          return true;
        }
        if (r.status === 409 && r.body.error && r.body.error.code === 'draft_stale') {
          if (window.confirm(r.body.error.message + '\n\nPublish anyway?')) return publish(true);
        }
        if (r.body.error && r.body.error.fields && r.body.error.fields.problems) showProblems(r.body.error.fields.problems);
        setStatus(errorText(r.body, 'Not published.'), 'error');
        return false;
      });
    });
  }

  // --- wiring -----------------------------------------------------------------------------------

  /* Fit the diagram into the canvas, clear of the palette on the left. A long pathway is
     not shrunk below a readable size: it opens at its start, and the rest is a drag or
     a scroll away (fitting all of the OPD visit would make its labels unreadable). */
  var MIN_READABLE_SCALE = 0.75;
  function fitDiagram() {
    canvas.zoom('fit-viewport', 'auto');
    var vb = canvas.viewbox();
    var inner = vb.inner, outer = vb.outer;
    if (!inner.width || !inner.height) return;
    var left = 130, pad = 24;
    var scale = Math.min(1.2, (outer.width - left - pad) / inner.width, (outer.height - 2 * pad) / inner.height);
    scale = Math.max(scale, MIN_READABLE_SCALE);
    canvas.viewbox({ x: inner.x - left / scale, y: inner.y - pad / scale, width: outer.width / scale, height: outer.height / scale });
  }

  eventBus.on('selection.changed', function (e) { renderPanel(e.newSelection.length === 1 ? e.newSelection[0] : null); });
  eventBus.on('commandStack.changed', function () {
    state.dirty = true;
    if (!state.editing && state.current) renderPanel(registry.get(state.current.id) || null);
    if (statusEl.className.indexOf('busy') < 0) setStatus('Unsaved changes.', '');
  });
  document.getElementById('save-draft').addEventListener('click', function () { save(); });
  document.getElementById('publish').addEventListener('click', function () { publish(false); });
  document.addEventListener('keydown', function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === 's') { e.preventDefault(); save(); }
  });
  window.addEventListener('beforeunload', function (e) {
    if (state.dirty) { e.preventDefault(); e.returnValue = ''; }
  });

  modeler.importXML(data.xml).then(function (result) {
    if (result.warnings && result.warnings.length) console.warn('bpmn-js import warnings', result.warnings);
    fitDiagram();
    state.dirty = false;
    showProblems(state.problems);
    renderPanel(null);
    if (data.draft) loadDiff();
    document.body.setAttribute('data-editor-ready', 'true');
  }).catch(function (err) {
    setStatus('The diagram could not be opened: ' + err.message, 'error');
  });
})();
