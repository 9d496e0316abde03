// The process designer: bpmn-js Modeler (from node_modules) plus finflow's own pieces — a properties panel
// for finflow's settings (stored as spiffworkflow:property extension elements, so a downloaded file
// round-trips), 校验 and 部署 through the REST API (its validation, its role check), and a diff.
(function () {
  const editor = JSON.parse(document.getElementById("ff-editor").textContent);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const status = document.getElementById("status"), report = document.getElementById("report");
  // The spiffworkflow extension elements finflow's processes use, described so bpmn-js keeps them (an
  // element of a described namespace that is not described would be dropped on save; 校验 catches that).
  const SPIFF = {
    name: "SpiffWorkflow", prefix: "spiffworkflow", uri: "http://spiffworkflow.org/bpmn/schema/1.0/core",
    xml: { tagAlias: "lowerCase" }, associations: [],
    types: [
      { name: "Properties", superClass: ["Element"],
        properties: [{ name: "properties", type: "Property", isMany: true }] },
      { name: "Property", superClass: ["Element"],
        properties: [{ name: "name", isAttr: true, type: "String" }, { name: "value", isAttr: true, type: "String" }] },
      { name: "ServiceTaskOperator", superClass: ["Element"],
        properties: [{ name: "id", isAttr: true, type: "String" }, { name: "resultVariable", isAttr: true, type: "String" },
                     { name: "parameterList", type: "Parameters" }] },
      { name: "Parameters", superClass: ["Element"],
        properties: [{ name: "parameters", type: "Parameter", isMany: true }] },
      { name: "Parameter", superClass: ["Element"],
        properties: [{ name: "id", isAttr: true, type: "String" }, { name: "type", isAttr: true, type: "String" },
                     { name: "value", isAttr: true, type: "String" }] },
      { name: "CalledDecisionId", superClass: ["Element"], properties: [{ name: "value", isBody: true, type: "String" }] },
      { name: "PreScript", superClass: ["Element"], properties: [{ name: "value", isBody: true, type: "String" }] },
      { name: "PostScript", superClass: ["Element"], properties: [{ name: "value", isBody: true, type: "String" }] },
    ],
  };
  // finflow's settings on a user task: [property, label, kind, choices]
  const USER_TASK = [
    ["finflow.assignee", "审批人（表达式，如 manager(starter)、role(cfo)、user(a,b)）", "text"],
    ["finflow.mode", "多人审批方式", "select", [["", "默认（或签）"], ["any", "或签（任一人）"], ["all", "会签（全部同意）"], ["sequence", "依次审批"]]],
    ["finflow.actions", "可用操作（逗号分隔）", "text"],
    ["finflow.on_empty", "找不到审批人时", "text"],
    ["finflow.form", "表单", "text"],
    ["finflow.cc", "抄送（表达式）", "text"],
    ["finflow.dedupe", "与上一节点审批人相同时自动通过", "select", [["", "否"], ["true", "是"]]],
    ["finflow.distinct", "不得由已审批过本单的人审批", "select", [["", "否"], ["true", "是"]]],
    ["finflow.allow_starter", "允许申请人审批自己的单据", "select", [["", "否"], ["true", "是"]]],
    ["card.title", "企业微信卡片标题模板", "text"],
    ["card.fields", "企业微信卡片显示字段（逗号分隔）", "text"],
  ];
  const BOUNDARY_TIMER = [
    ["finflow.timeout_action", "超时处理（approve / reject / role:角色）", "text"],
  ];

  const modeler = new BpmnJS({ container: "#canvas", moddleExtensions: { spiffworkflow: SPIFF } });
  const moddle = modeler.get("moddle"), modeling = modeler.get("modeling");

  function say(text, kind) {
    status.textContent = text;
    status.className = kind === "error" ? "badge error" : "meta";
  }

  function propertiesOf(bo) {
    const ext = bo.extensionElements;
    const holder = ext && ext.values.find((v) => v.$type === "spiffworkflow:Properties");
    return holder ? holder.properties || [] : [];
  }

  function setProperty(element, name, value) {
    const bo = element.businessObject;
    let ext = bo.extensionElements;
    if (!ext) ext = moddle.create("bpmn:ExtensionElements", { values: [] });
    let holder = ext.values.find((v) => v.$type === "spiffworkflow:Properties");
    if (!holder) { holder = moddle.create("spiffworkflow:Properties", { properties: [] }); ext.values.push(holder); }
    const kept = (holder.properties || []).filter((p) => p.name !== name);
    if (value) kept.push(moddle.create("spiffworkflow:Property", { name: name, value: value }));
    holder.properties = kept;
    modeling.updateProperties(element, { extensionElements: ext });  // one undoable command
  }

  function field(element, [name, label, kind, choices]) {
    const current = (propertiesOf(element.businessObject).find((p) => p.name === name) || {}).value || "";
    const wrap = document.createElement("label");
    wrap.textContent = label;
    let input;
    if (kind === "select") {
      input = document.createElement("select");
      choices.forEach(([value, text]) => input.add(new Option(text, value, false, value === current)));
    } else {
      input = document.createElement("input");
      input.value = current;
    }
    input.name = name;
    input.addEventListener("change", () => setProperty(element, name, input.value.trim()));
    wrap.appendChild(input);
    return wrap;
  }

  function showProperties(element) {
    const panel = document.getElementById("properties");
    panel.innerHTML = "";
    if (!element || !element.businessObject || element.type === "label") {
      panel.innerHTML = '<p class="meta">选择一个节点以编辑 finflow 属性。</p>';
      return;
    }
    const bo = element.businessObject;
    const title = document.createElement("h2");
    title.textContent = (bo.name || bo.id) + "（" + element.type.replace("bpmn:", "") + "）";
    panel.appendChild(title);
    const name = document.createElement("label");
    name.textContent = "名称";
    const nameInput = document.createElement("input");
    nameInput.name = "name";
    nameInput.value = bo.name || "";
    nameInput.addEventListener("change", () => modeling.updateProperties(element, { name: nameInput.value }));
    name.appendChild(nameInput);
    panel.appendChild(name);
    const isTimer = element.type === "bpmn:BoundaryEvent" &&
      (bo.eventDefinitions || []).some((d) => d.$type === "bpmn:TimerEventDefinition");
    const fields = element.type === "bpmn:UserTask" ? USER_TASK : isTimer ? BOUNDARY_TIMER : [];
    fields.forEach((spec) => panel.appendChild(field(element, spec)));
    if (isTimer) timerFields(element, panel);
  }

  // A boundary timer: how long after the task it fires (a reminder when it does not interrupt the task,
  // a timeout when it does). The duration is stored as the engine reads it: a quoted ISO 8601 string.
  function timerFields(element, panel) {
    const bo = element.businessObject, timer = bo.eventDefinitions.find((d) => d.$type === "bpmn:TimerEventDefinition");
    const cycle = Boolean(timer.timeCycle), property = cycle ? "timeCycle" : "timeDuration";
    const duration = document.createElement("label");
    duration.textContent = cycle ? "重复周期（如 R/PT24H：每 24 小时）" : "时长（ISO 8601，如 PT24H、P3D）";
    const input = document.createElement("input");
    input.name = "timer.duration";
    input.value = ((timer[property] && timer[property].body) || "").replace(/^["']|["']$/g, "");
    input.addEventListener("change", () => {
      const value = input.value.trim().toUpperCase();
      if (!/^(R\d*\/)?P(?=\d|T\d)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$/.test(value)) {
        say("时长格式不正确：" + value, "error");
        return;
      }
      const body = moddle.create("bpmn:FormalExpression", { body: '"' + value + '"' });
      modeling.updateModdleProperties(element, timer, { [property]: body });
      say("");
    });
    duration.appendChild(input);
    panel.appendChild(duration);
    const kind = document.createElement("label");
    kind.textContent = "到时后";
    const choice = document.createElement("select");
    choice.name = "timer.interrupting";
    [["false", "提醒（不中断任务）"], ["true", "超时（中断任务）"]].forEach(([value, text]) =>
      choice.add(new Option(text, value, false, String(bo.cancelActivity !== false) === value)));
    choice.addEventListener("change", () => modeling.updateProperties(element, { cancelActivity: choice.value === "true" }));
    kind.appendChild(choice);
    panel.appendChild(kind);
  }

  // Decision tables (DMN) open in dmn-js, one modeler per file, created when first chosen; channel mappings
  // (<process>.oa.json: OA workflow, fields, user task -> OA node) are edited as JSON text beside them.
  const decisions = {}, mappingEdits = {};
  const fileChoice = document.getElementById("file"), dmnCanvas = document.getElementById("dmn-canvas");
  const mappingText = document.getElementById("mapping-text");
  mappingText.addEventListener("input", () => { mappingEdits[fileChoice.value] = mappingText.value; });
  fileChoice.addEventListener("change", async () => {
    const name = fileChoice.value, isBpmn = name === editor.bpmn_file, isMapping = name.endsWith(".json");
    document.getElementById("canvas").hidden = !isBpmn;
    document.getElementById("properties").hidden = !isBpmn;
    dmnCanvas.hidden = isBpmn || isMapping;
    mappingText.hidden = !isMapping;
    Object.entries(decisions).forEach(([file, entry]) => { entry.box.hidden = file !== name; });
    if (isMapping) { mappingText.value = mappingEdits[name] ?? editor.files[name]; return; }
    if (isBpmn || decisions[name]) return;
    const box = document.createElement("div");
    box.className = "dmn-box";
    dmnCanvas.appendChild(box);
    const dmn = new DmnJS({ container: box });
    decisions[name] = { box: box, modeler: dmn };
    try {
      await dmn.importXML(editor.files[name]);
      const table = dmn.getViews().find((view) => view.type === "decisionTable");
      if (table) await dmn.open(table);
      document.body.dataset.dmn = "ready";
    } catch (error) {
      say(name + " 无法打开：" + error.message, "error");
    }
  });

  async function currentFiles() {
    const { xml } = await modeler.saveXML({ format: true });
    const files = Object.assign({}, editor.files);
    files[editor.bpmn_file] = xml;
    for (const [name, entry] of Object.entries(decisions)) {
      files[name] = (await entry.modeler.saveXML({ format: true })).xml;
    }
    Object.assign(files, mappingEdits);
    const form = new FormData();
    Object.entries(files).forEach(([name, text]) => form.append("files", new Blob([text], { type: "text/plain" }), name));
    return { form: form, xml: xml };
  }

  const overlays = modeler.get("overlays"), canvas = modeler.get("canvas");
  let marked = null;
  function clearError() {
    if (marked) { canvas.removeMarker(marked, "ff-invalid"); overlays.remove({ type: "ff-error" }); marked = null; }
  }
  function showError(error) {
    const details = error.details || {};
    const where = details.element_id && modeler.get("elementRegistry").get(details.element_id);
    if (where) {
      marked = details.element_id;
      canvas.addMarker(marked, "ff-invalid");
      const note = document.createElement("div");
      note.className = "ff-error";
      note.textContent = error.message;
      overlays.add(marked, "ff-error", { position: { top: -36, left: 0 }, html: note });
    }
    say("校验未通过：" + error.message + (details.element_id ? "（节点 " + details.element_id + "）" : ""), "error");
  }

  async function call(path, form) {
    const answer = await fetch(path, { method: "POST", body: form, credentials: "same-origin",
                                       headers: { "X-CSRF-Token": csrf } });
    const body = await answer.json().catch(() => ({}));
    return { ok: answer.ok, status: answer.status, body: body };
  }

  document.getElementById("validate").addEventListener("click", async () => {
    clearError();
    say("校验中…");
    const { form } = await currentFiles();
    const result = await call("/api/v1/definitions/validate", form);
    if (result.ok) {
      const warnings = result.body.warnings || [];
      say("校验通过" + (warnings.length ? "，提示：" + warnings.map((w) => w.message).join("；") : ""));
      document.body.dataset.validated = "ok";
    } else {
      showError(result.body.error || { message: "HTTP " + result.status });
      document.body.dataset.validated = "failed";
    }
  });

  const deployButton = document.getElementById("deploy");
  deployButton?.addEventListener("click", async () => {
    clearError();
    say("部署中…");
    const { form } = await currentFiles();
    const result = await call("/api/v1/definitions", form);
    if (!result.ok) { showError(result.body.error || { message: "HTTP " + result.status }); return; }
    const mine = (result.body.deployed || []).find((d) => d.process_key === editor.key) || result.body.deployed[0];
    say(mine.created ? "已部署为 v" + mine.version : "内容与 v" + mine.version + " 相同，未生成新版本");
    document.body.dataset.deployed = String(mine.version);
  });

  function elementsOf(xml) {
    const doc = new DOMParser().parseFromString(xml, "application/xml");
    const found = new Map();
    doc.querySelectorAll("*").forEach((node) => {
      if (!node.getAttribute("id") || node.namespaceURI !== "http://www.omg.org/spec/BPMN/20100524/MODEL") return;
      if (["definitions", "process", "collaboration"].includes(node.localName)) return;
      const copy = node.cloneNode(true);
      copy.querySelectorAll("[id]").forEach((child) => { if (child !== copy && child.localName !== "property") child.remove(); });
      found.set(node.getAttribute("id"), { type: node.localName, name: node.getAttribute("name") || "",
        signature: new XMLSerializer().serializeToString(copy).replace(/\s+/g, " ") });
    });
    return found;
  }

  document.getElementById("diff").addEventListener("click", async () => {
    const { xml } = await modeler.saveXML({ format: true });
    const before = elementsOf(editor.files[editor.bpmn_file]), after = elementsOf(xml);
    const added = [...after.keys()].filter((id) => !before.has(id));
    const removed = [...before.keys()].filter((id) => !after.has(id));
    const changed = [...after.keys()].filter((id) => before.has(id) && before.get(id).signature !== after.get(id).signature);
    const line = (id, map) => (map.get(id).name || id) + "（" + map.get(id).type + "）";
    report.hidden = false;
    report.innerHTML = "<h2>相对 v" + editor.version + " 的修改</h2>";
    [["新增", added, after, "added"], ["删除", removed, before, "removed"], ["修改", changed, after, "changed"]].forEach(
      ([title, ids, map, css]) => {
        const block = document.createElement("div");
        block.className = css;
        block.dataset.diff = css;
        block.textContent = title + " " + ids.length + " 个" + (ids.length ? "：" : "");
        if (ids.length) {
          const list = document.createElement("ul");
          ids.forEach((id) => { const li = document.createElement("li"); li.textContent = line(id, map); list.appendChild(li); });
          block.appendChild(list);
        }
        report.appendChild(block);
      });
  });

  document.getElementById("download").addEventListener("click", async () => {
    const { xml } = await modeler.saveXML({ format: true });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([xml], { type: "application/xml" }));
    link.download = editor.bpmn_file;
    link.click();
  });

  modeler.get("eventBus").on("selection.changed", (event) => showProperties(event.newSelection[0]));
  modeler.importXML(editor.files[editor.bpmn_file]).then(() => {
    document.querySelector("#canvas > p.meta")?.remove();
    canvas.zoom("fit-viewport");
    document.body.dataset.modeler = "ready";
  }).catch((error) => say("流程图无法打开：" + error.message, "error"));
})();
