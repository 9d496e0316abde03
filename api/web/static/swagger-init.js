// Starts Swagger UI on /api/v1/docs (api/templates/swagger_ui.html). A file, not an inline script, so the
// page keeps the CSP every page has (script-src 'self', no inline script); the settings are the page's
// JSON block: the document's URL and OPENAPI_SWAGGER_UI_CONFIG (api/openapi.py).
(function () {
  "use strict";
  var settings = JSON.parse(document.getElementById("ff-swagger").textContent);
  var config = Object.assign({url: settings.url, dom_id: settings.dom_id}, settings.config);
  window.ui = SwaggerUIBundle(config);
})();
