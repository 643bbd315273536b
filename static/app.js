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

  // Focus never falls to <body> when htmx replaces what had it: new content may name what takes
  // it ([data-focus]: a notice, the button that asked); a replaced table row offers its first
  // control; anything else hands it to the message or the section the request came from.
  var CONTROLS = "button:not([disabled]), a[href], input:not([type=hidden]):not([disabled]), select, textarea";
  var askingRegion = null, stopgap = null, regionHadFocus = false;

  function focusLost() {
    var active = document.activeElement;
    return !active || active === document.body;
  }

  function focusRegion(region) {
    var target = region.querySelector(".flashes, .notice") || region;
    if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
    target.focus();
    stopgap = target;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    askingRegion = elt && elt.closest ? elt.closest("section[id]") : null;
    // Only a request the person made from inside the region may move focus (a count that loads
    // by itself after the page opens must not take it).
    regionHadFocus = !!askingRegion && askingRegion.contains(document.activeElement);
    stopgap = null;
  });

  // Swapped by now (a deleted row leaves nothing behind); new content may still claim focus below.
  document.addEventListener("htmx:afterRequest", function () {
    if (regionHadFocus && focusLost() && askingRegion && askingRegion.isConnected) focusRegion(askingRegion);
  });

  // New content that asks for focus gets it once htmx has made it live (processed its hx-
  // attributes). The autofocus attribute would let the browser focus it a moment earlier, when
  // pressing Enter would still submit the plain form.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.querySelector || elt === document.body) return;
    var wanted = elt.matches("[data-focus]") ? elt : elt.querySelector("[data-focus]");
    var lost = focusLost() || document.activeElement === stopgap;
    if (!wanted && lost && elt.matches("tr")) wanted = elt.querySelector(CONTROLS);
    if (wanted) wanted.focus();
  });

  // After an inline swap shows errors, put keyboard focus on the first field with one. (htmx
  // itself focuses [autofocus]; waiting for the settle means the new content is live by then.)
  // The event comes from the new content: after an outerHTML swap, detail.target is the old one.
  document.addEventListener("htmx:afterSettle", function (event) {
    var root = event.target && event.target.isConnected ? event.target : event.detail.target;
    if (!root || !root.isConnected || !root.querySelector) return;
    var invalid = root.querySelector("[aria-invalid=true]");
    if (invalid) invalid.focus();
  });

  // A whole page answered with errors (a form sent without htmx, a 422): keyboard focus starts on
  // the first field with one, as after an inline swap, instead of at the top of the page.
  document.addEventListener("DOMContentLoaded", function () {
    var invalid = document.querySelector("main [aria-invalid=true]");
    if (invalid && !window.location.hash) invalid.focus();
  });

  // Escape inside an inline confirmation or edit presses its Cancel.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented || !event.target.closest) return;
    var scope = event.target.closest("[data-cancel-on-escape]");
    var cancel = scope && scope.querySelector("[data-cancel]");
    if (!cancel) return;
    event.preventDefault();
    cancel.click();
  });

  // A link that looks and is announced as a button answers Space as a button does.
  document.addEventListener("keydown", function (event) {
    if (event.key !== " " || !event.target.matches || !event.target.matches("a[role=button][href]")) return;
    event.preventDefault();
    event.target.click();
  });
})();

// A bulk action's confirmation: Cancel (Escape presses it) takes it away and gives focus back to the bar.
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
})();
