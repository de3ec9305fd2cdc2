// Drag-and-drop onto a file input: every <label data-dropzone> holding an <input type=file> accepts dropped
// files, shows what was chosen (a preview of the first image) and highlights while something is dragged over.
(function () {
  "use strict";
  function describe(zone, input) {
    var text = zone.querySelector(".dropzone-text");
    var preview = zone.querySelector(".dropzone-preview");
    var files = input.files;
    if (!files || !files.length) return;
    if (text) {
      text.textContent = files.length === 1 ? files[0].name : files.length + " photos chosen";
    }
    if (preview && files[0].type.indexOf("image/") === 0) {
      if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
      preview.dataset.url = URL.createObjectURL(files[0]);
      preview.src = preview.dataset.url;
      preview.hidden = false;
    }
    zone.classList.add("has-file");
  }
  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    if (!input) return;
    input.addEventListener("change", function () { describe(zone, input); });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
      var dropped = event.dataTransfer && event.dataTransfer.files;
      if (!dropped || !dropped.length) return;
      var transfer = new DataTransfer();
      var count = input.multiple ? dropped.length : 1;
      for (var i = 0; i < count; i++) transfer.items.add(dropped[i]);
      input.files = transfer.files;
      describe(zone, input);
    });
  });
})();
