// The per-version heatmap: token counts on every node and flow (engine/services/statistics.py), the
// busier the warmer, like Camunda Cockpit's.
(function () {
  const data = JSON.parse(document.getElementById("ff-heat").textContent);
  const viewer = new BpmnJS({ container: "#diagram" });
  viewer.importXML(data.bpmn).then(() => {
    document.getElementById("diagram-loading")?.remove();
    const canvas = viewer.get("canvas"), overlays = viewer.get("overlays"), registry = viewer.get("elementRegistry");
    const most = Math.max(1, ...Object.values(data.nodes).map((n) => n.tokens), ...Object.values(data.flows));
    const level = (count) => (count ? Math.min(5, 1 + Math.floor((4 * count) / most)) : 0);
    Object.entries(data.nodes).forEach(([id, node]) => {
      if (!registry.get(id)) return;
      canvas.addMarker(id, "ff-heat-" + level(node.tokens));
      if (node.tokens || node.waiting) {
        overlays.add(id, { position: { bottom: 0, right: 0 }, html: '<span class="ff-duration">' + node.tokens +
          (node.waiting ? " / " + node.waiting : "") + "</span>" });
      }
    });
    Object.entries(data.flows).forEach(([id, count]) => {
      if (registry.get(id)) canvas.addMarker(id, "ff-heat-" + level(count));
    });
    canvas.zoom("fit-viewport");
    document.body.dataset.diagram = "ready";
  }).catch((error) => {
    document.getElementById("diagram").textContent = "流程图无法显示：" + error.message;
    document.body.dataset.diagram = "failed";
  });
})();
