// Live state of the wardrobe: polls the owner's status endpoint while any item is pending (and a little
// longer while an analysed item still waits for its automatic category), and updates each item's status
// badge and category in place, without a reload.
(function () {
  "use strict";
  var list = document.querySelector("[data-status-url]");
  if (!list) return;
  var url = list.getAttribute("data-status-url");
  var interval = 1500;
  var graceTicks = 10; // polls after the last pending item turned ready, for the automatic categories

  function pendingCount() {
    return list.querySelectorAll('[data-testid="status"].status-pending').length;
  }

  function uncategorisedCount() {
    var count = 0;
    list.querySelectorAll('[data-testid="item-category"]').forEach(function (select) {
      if (!select.value && !select.dataset.touched) count++;
    });
    return count;
  }

  function apply(data) {
    list.querySelectorAll("[data-item-id]").forEach(function (tile) {
      var id = tile.getAttribute("data-item-id");
      var status = (data.items || {})[id];
      var badge = tile.querySelector('[data-testid="status"]');
      if (status && badge && badge.textContent !== status) {
        badge.textContent = status;
        badge.className = "status status-" + status;
      }
      var category = (data.categories || {})[id];
      var select = tile.querySelector('[data-testid="item-category"]');
      if (category && select && !select.value && !select.dataset.touched) {
        select.value = category;
        var percent = (data.suggestions || {})[id];
        if (percent !== undefined) offerConfirmation(tile, select, category, percent);
      }
    });
  }

  // The same suggestion the page renders for an unsure automatic tag (templates/wardrobe/wardrobe.html).
  function offerConfirmation(tile, select, category, percent) {
    if (tile.querySelector('[data-testid="category-suggestion"]')) return;
    var edit = select.form;
    var form = document.createElement("form");
    form.method = "post";
    form.action = edit.action;
    form.className = "inline suggestion";
    form.setAttribute("data-testid", "category-suggestion");
    var csrf = edit.querySelector("input[name=csrfmiddlewaretoken]").cloneNode();
    var value = document.createElement("input");
    value.type = "hidden"; value.name = "category"; value.value = category;
    var text = document.createElement("span");
    text.className = "muted";
    text.textContent = "Suggested: " + category + "? (" + percent + " % sure)";
    var button = document.createElement("button");
    button.type = "submit"; button.className = "link"; button.textContent = "Confirm";
    button.setAttribute("data-testid", "confirm-category");
    var hint = document.createElement("span");
    hint.className = "muted"; hint.textContent = "or pick the right one above";
    [csrf, value, text, document.createTextNode(" "), button, document.createTextNode(" "), hint].forEach(
      function (node) { form.appendChild(node); });
    edit.insertAdjacentElement("afterend", form);
  }

  list.querySelectorAll('[data-testid="item-category"]').forEach(function (select) {
    select.addEventListener("change", function () { select.dataset.touched = "1"; });
  });

  function keepPolling() {
    if (pendingCount()) return true;
    return uncategorisedCount() > 0 && graceTicks-- > 0;
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) apply(data); })
      .catch(function () { /* try again on the next tick */ })
      .then(function () { if (keepPolling()) setTimeout(poll, interval); });
  }

  if (keepPolling()) setTimeout(poll, interval);
})();
