// The auditor's instance diagram: bpmn-js (NavigatedViewer, from node_modules) with the instance's path
// coloured from the server's progress (engine/services/progress.py) and each node's time spent
// (formatted by the server, as on the statistics page).
(function () {
  const data = JSON.parse(document.getElementById("ff-diagram").textContent);
  const container = document.getElementById("diagram");

  async function show() {
    const viewer = new BpmnJS({ container: container });
    try {
      await viewer.importXML(data.bpmn);
    } catch (error) {
      container.innerHTML = '<p class="badge error">流程图无法显示：' + String(error.message || error) + "</p>";
      document.body.dataset.diagram = "failed";
      return;
    }
    document.getElementById("diagram-loading")?.remove();
    const canvas = viewer.get("canvas"), overlays = viewer.get("overlays"), registry = viewer.get("elementRegistry");
    const done = new Set(data.progress.completed.map((n) => n.node_id));
    const current = new Set(data.progress.current), taken = new Set(data.progress.taken_flows);
    registry.getAll().forEach((element) => {
      const type = element.type || "";
      if (element.id === canvas.getRootElement().id || type === "label" || type.endsWith("Process") ||
          type.endsWith("Participant") || type.endsWith("Lane")) return;
      let marker = "ff-untaken";
      if (current.has(element.id)) marker = "ff-current";
      else if (done.has(element.id)) marker = "ff-done";
      else if (taken.has(element.id)) marker = "ff-taken";
      canvas.addMarker(element.id, marker);
    });
    data.progress.completed.forEach((node) => {
      if (!registry.get(node.node_id) || !node.duration) return;
      overlays.add(node.node_id, { position: { bottom: 0, right: 0 },
        html: '<span class="ff-duration">' + node.duration + "</span>" });
    });
    canvas.zoom("fit-viewport");
    document.body.dataset.diagram = "ready";
  }

  const filter = document.getElementById("kind-filter");
  filter?.addEventListener("change", () => {
    document.querySelectorAll("#timeline tbody tr").forEach((row) => {
      row.hidden = Boolean(filter.value) && row.dataset.kind !== filter.value;
    });
  });
  show();
})();
