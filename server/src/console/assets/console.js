// The console's own script (served from this origin; the pages run no inline script).
// Marks each live region connected or not, and, whenever its event stream (re)opens,
// refreshes what it shows: anything that changed before the stream was open is
// fetched then, so no update falls between page load and connection.
document.addEventListener("htmx:sseOpen", function (event) {
  var region = event.target;
  region.setAttribute("data-live", "open");
  region.querySelectorAll("[data-refresh-on-open]").forEach(function (el) {
    htmx.trigger(el, "live-open");
  });
});
document.addEventListener("htmx:sseError", function (event) {
  event.target.setAttribute("data-live", "error");
});
