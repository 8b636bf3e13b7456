/* Form editor: live preview of the JSON definition, rendered by the server with the same
 * macro task pages use (render_form), and its problems (hms.forms.validate_definition). */
(function () {
  'use strict';
  var script = document.currentScript;
  var url = script.getAttribute('data-preview-url');
  var area = document.getElementById('schema');
  var keyInput = document.getElementById('form-key');
  var status = document.getElementById('preview-status');
  var problems = document.getElementById('preview-problems');
  var preview = document.getElementById('preview');
  var timer = null;
  var sequence = 0;

  function refresh() {
    var mine = ++sequence;
    fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
      body: JSON.stringify({ text: area.value, key: (keyInput && keyInput.value) || 'preview' })
    }).then(function (r) { return r.json(); }).then(function (body) {
      if (mine !== sequence) return;  // an older answer arriving late
      problems.textContent = '';
      (body.problems || []).forEach(function (p) {
        var li = document.createElement('li');
        li.textContent = p;
        problems.appendChild(li);
      });
      if (body.ok) {
        status.textContent = 'The form is valid. This is what staff will see:';
        area.removeAttribute('aria-invalid');
        preview.innerHTML = body.html;  // rendered and escaped by the server's template
      } else {
        status.textContent = (body.error && body.error.message) ||
          ((body.problems || []).length + ' problem(s): the form cannot be saved yet.');
        area.setAttribute('aria-invalid', 'true');
        preview.textContent = '';
      }
    }).catch(function () { status.textContent = 'The preview is not available right now.'; });
  }

  area.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(refresh, 350); });
  if (keyInput) keyInput.addEventListener('change', refresh);
  refresh();
})();
