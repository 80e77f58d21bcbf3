// Starts Swagger UI on /docs. A file of its own, not an inline script, so the page's CSP (script-src 'self') holds.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null, // no calls to an outside validator
    displayRequestDuration: true,
  });
})();
