// Small behaviours htmx does not cover. Loaded as a file: the CSP forbids inline script.
(function () {
  "use strict";

  // "Select all on this page": ticks or clears every row checkbox of the same form.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("input[data-select-all]")) return;
    var form = box.getAttribute("data-select-all");
    document.querySelectorAll('input[type=checkbox][name=ids][form="' + form + '"]').forEach(function (row) {
      row.checked = box.checked;
    });
  });

  // htmx swaps error responses too (4xx fragments carry field errors and messages).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 409 || status === 422 || status === 400 || status === 403 || status === 404) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else if (status >= 500 && event.detail.xhr.responseText) {
      // The server's explanation (a 503 while the database is away, say) goes above the page,
      // not into the row or form that asked: what was there stays, to try again.
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      event.detail.target = document.getElementById("request-error");
      event.detail.swapOverride = "innerHTML";
    }
  });

  // A request that worked clears the explanation of one that did not.
  document.addEventListener("htmx:afterRequest", function (event) {
    var box = document.getElementById("request-error");
    if (box && event.detail.xhr && event.detail.xhr.status < 400 && box.firstChild) box.replaceChildren();
  });

  // New content that asks for focus gets it once htmx has made it live (processed its hx-
  // attributes). The autofocus attribute would let the browser focus it a moment earlier, when
  // pressing Enter would still submit the plain form.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.querySelector) return;
    var wanted = elt.matches("[data-focus]") ? elt : elt.querySelector("[data-focus]");
    if (wanted) wanted.focus();
  });

  // After an inline swap shows errors, put keyboard focus on the first field with one. (htmx
  // itself focuses [autofocus]; waiting for the settle means the new content is live by then.)
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    if (!target || !target.isConnected || !target.querySelector) return;
    var invalid = target.querySelector("[aria-invalid=true]");
    if (invalid) invalid.focus();
  });
})();

// A bulk action's confirmation: Cancel (or Escape) takes it away and gives focus back to the bar.
(function () {
  "use strict";
  function dismiss(box) {
    var container = box.closest("#bulk-confirm");
    if (!container) return false;
    container.replaceChildren();
    var action = document.getElementById("bulk-action");
    if (action) action.focus();
    return true;
  }
  document.addEventListener("click", function (event) {
    var cancel = event.target.closest && event.target.closest("#bulk-confirm [data-cancel]");
    if (cancel && dismiss(cancel)) event.preventDefault();
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || !event.target.closest) return;
    var box = event.target.closest("#bulk-confirm [data-cancel-on-escape]");
    if (box && dismiss(box)) event.preventDefault();
  });
})();
