// The dashboard's only script: pages that show live data reload themselves while visible, and a
// form marked data-confirm asks before it is sent.
(function () {
  var every = Number(document.body.getAttribute("data-refresh") || 0);
  if (every > 0) {
    setInterval(function () {
      if (document.visibilityState === "visible" && !document.querySelector("form :focus")) location.reload();
    }, every * 1000);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!confirm(f.getAttribute("data-confirm"))) e.preventDefault();
    });
  });
})();
