"use strict";
document.addEventListener("DOMContentLoaded", function () {
  console.log("page loaded");
});
