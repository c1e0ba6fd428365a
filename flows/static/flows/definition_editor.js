/*
 * The flow definition editor (flows.admin.editor.DefinitionEditor).
 *
 * Lays CodeMirror 5 (vendored beside this file) over the definition's text area: JSON highlighting, line
 * numbers, matching brackets, and every problem marked in the margin at its line. Problems come from the
 * server: first those the page was rendered with (a JSON data island), then, whenever the text changes, what
 * FlowAdmin.check_view answers for the new text (each problem carries its line and column in that text).
 *
 * Progressive enhancement: without CodeMirror the text area stays as it is and the "Check" button still lists
 * the problems. The form always posts the text area (CodeMirror copies its text back on submit). Nothing from
 * an answer is inserted as HTML (textContent only).
 */
(function () {
  "use strict";

  var GROUPS = [
    {severity: "error", title: "Errors (the flow cannot be saved until they are fixed)", colour: "#ba2121"},
    {severity: "warning", title: "Warnings (the flow can be saved)", colour: "#8a6100"}
  ];
  var LINT_DELAY_MS = 700;

  function ready(callback) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", callback);
    } else {
      callback();
    }
  }

  ready(function () {
    var box = document.querySelector(".flow-editor");
    var textarea = box && box.querySelector("textarea");
    var output = box && box.querySelector(".flow-problems");
    var button = box && box.querySelector(".flow-check-button");
    var tokenInput = document.querySelector("[name=csrfmiddlewaretoken]");
    if (!box || !textarea || !output || !button || !tokenInput) { return; }
    var island = document.getElementById(box.dataset.problemsId);
    // The problems of `known.text`, as the server found them: reused while the text is unchanged.
    var known = {text: textarea.value, problems: island ? JSON.parse(island.textContent) : []};
    var editor = null;

    function text() { return editor ? editor.getValue() : textarea.value; }

    // --- asking the server -------------------------------------------------------------------------------

    function check(content) {
      if (content === known.text) { return Promise.resolve(known.problems); }
      return fetch(box.dataset.checkUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": tokenInput.value},
        body: JSON.stringify({text: content})
      }).then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      }).then(function (answer) {
        known = {text: content, problems: answer.problems || []};
        return known.problems;
      });
    }

    // --- the list under the editor ---------------------------------------------------------------------------

    function note(message, colour) {
      var p = document.createElement("p");
      p.className = "flow-check-note";
      p.textContent = message;
      p.style.color = colour;
      return p;
    }

    function problemItem(problem, colour) {
      var li = document.createElement("li");
      if (problem.line) {
        var link = document.createElement("a");
        link.href = "#";
        link.className = "flow-problem-line";
        link.dataset.line = problem.line;
        link.dataset.column = problem.column || 1;
        link.textContent = "line " + problem.line;
        li.appendChild(link);
        li.appendChild(document.createTextNode(problem.path ? " \u00b7 " : ""));
      }
      if (problem.path || !problem.line) {
        var code = document.createElement("code");
        code.textContent = problem.path || "(the whole definition)";
        code.style.color = colour;
        li.appendChild(code);
      }
      if (problem.item) {
        var where = document.createElement("span");
        where.className = "flow-problem-item";
        where.textContent = " (" + problem.item + ")";
        li.appendChild(where);
      }
      li.appendChild(document.createTextNode((problem.path || !problem.line ? " \u2014 " : ": ") + problem.message));
      return li;
    }

    function showList(problems) {
      var nodes = [];
      if (!problems.length) {
        nodes.push(note("No problems found: the flow can be saved.", "#146c43"));
      }
      GROUPS.forEach(function (group) {
        var found = problems.filter(function (p) { return (p.severity === "error") === (group.severity === "error"); });
        if (!found.length) { return; }
        var div = document.createElement("div");
        div.className = "flow-problems-" + group.severity;
        var heading = document.createElement("strong");
        heading.textContent = group.title;
        heading.style.color = group.colour;
        var ul = document.createElement("ul");
        found.forEach(function (problem) { ul.appendChild(problemItem(problem, group.colour)); });
        div.appendChild(heading);
        div.appendChild(ul);
        nodes.push(div);
      });
      output.replaceChildren.apply(output, nodes);
    }

    // "line 12" in the list: put the cursor there.
    output.addEventListener("click", function (event) {
      var link = event.target.closest(".flow-problem-line");
      if (!link) { return; }
      event.preventDefault();
      var line = Number(link.dataset.line) - 1;
      var column = Number(link.dataset.column || 1) - 1;
      if (editor) {
        editor.focus();
        editor.setCursor({line: line, ch: column});
        editor.scrollIntoView(null, 80);
        return;
      }
      var lines = textarea.value.split("\n");
      var offset = lines.slice(0, line).reduce(function (sum, l) { return sum + l.length + 1; }, 0) + column;
      textarea.focus();
      textarea.setSelectionRange(offset, offset);
    });

    // --- marks in the editor -----------------------------------------------------------------------------------

    function annotations(problems) {
      var last = editor.lastLine();
      return problems.filter(function (p) { return p.line; }).map(function (problem) {
        var line = Math.min(Math.max(problem.line - 1, 0), last);
        var length = editor.getLine(line).length;
        var column = Math.min(Math.max((problem.column || 1) - 1, 0), length);
        var where = problem.path ? problem.path + (problem.item ? " (" + problem.item + ")" : "") + ": " : "";
        return {
          from: CodeMirror.Pos(line, column),
          to: CodeMirror.Pos(line, Math.max(length, column + 1)),
          message: where + problem.message,
          severity: problem.severity === "error" ? "error" : "warning"
        };
      });
    }

    var first = true;
    function lint(content, updateLinting) {
      var initial = first;
      first = false;
      check(content).then(function (problems) {
        if (!initial) { showList(problems); }  // the page already lists what it was rendered with
        updateLinting(annotations(problems));
      }).catch(function () {
        updateLinting([]);
        output.replaceChildren(note("Could not check: the server did not answer. Saving checks the definition too.", "#ba2121"));
      });
    }

    if (window.CodeMirror) {
      try {
        editor = CodeMirror.fromTextArea(textarea, {
          mode: {name: "javascript", json: true},
          lineNumbers: true,
          matchBrackets: true,
          autoCloseBrackets: true,
          indentUnit: 2,
          tabSize: 2,
          indentWithTabs: false,
          gutters: ["CodeMirror-lint-markers", "CodeMirror-linenumbers"],
          lint: {getAnnotations: lint, async: true, delay: LINT_DELAY_MS},
          extraKeys: {
            Tab: function (cm) { cm.execCommand(cm.somethingSelected() ? "indentMore" : "insertSoftTab"); },
            "Shift-Tab": "indentLess"
          }
        });
        box.classList.add("flow-editor-ready");
      } catch (error) {
        editor = null;  // the plain text area goes on working
      }
    }

    button.addEventListener("click", function () {
      button.disabled = true;
      output.replaceChildren(note("Checking\u2026", "var(--body-quiet-color)"));
      check(text()).then(function (problems) {
        showList(problems);
        if (editor) { editor.performLint(); }  // the same text: marks from the answer just received
      }).catch(function () {
        output.replaceChildren(note("Could not check: the server did not answer. Saving checks the definition too.", "#ba2121"));
      }).finally(function () {
        button.disabled = false;
      });
    });
  });
})();
