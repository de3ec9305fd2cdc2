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
      if (category && select && !select.value && !select.dataset.touched) select.value = category;
    });
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
