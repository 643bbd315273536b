// Mounts Clerk's sign-in (ClerkJS, loaded from the instance's Frontend API) on /auth/sign-in.
// After sign-in the browser carries Clerk's __session cookie; the dashboard verifies it offline
// and starts its own session.
(function () {
  "use strict";
  var mount = document.getElementById("clerk-sign-in");
  if (!mount) return;
  var after = mount.getAttribute("data-after-sign-in") || "/";
  var signedOut = mount.getAttribute("data-signed-out") === "true";

  function start() {
    if (!window.Clerk) { setTimeout(start, 50); return; }
    window.Clerk.load().then(function () {
      if (signedOut && window.Clerk.user) {
        return window.Clerk.signOut().then(function () { show(); });
      }
      if (window.Clerk.user) { window.location.assign(after); return; }
      show();
    }).catch(function () {
      mount.textContent = "Clerk's sign-in could not be loaded. Use a one-time link instead.";
    });
  }

  function show() {
    mount.textContent = "";
    window.Clerk.mountSignIn(mount, { forceRedirectUrl: after, signUpUrl: null });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
