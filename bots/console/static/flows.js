// Loa organiser console: draw the flow diagrams with the vendored Mermaid (no other origin).
// The page lists each flow's Mermaid source in <pre class="mermaid">; without this script the
// source stays readable as text.
(function () {
  "use strict";
  var mermaid = window.mermaid;
  if (!mermaid) return;
  mermaid.initialize({
    startOnLoad: false,
    securityLevel: "strict",
    theme: "neutral",
    fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', Arial, sans-serif",
    state: { useMaxWidth: false }
  });
  mermaid.run({ querySelector: "pre.mermaid" }).then(function () {
    document.body.setAttribute("data-diagrams", "done");
  }, function (error) {
    document.body.setAttribute("data-diagrams", "error");
    if (window.console) console.error(error);
  });
})();
