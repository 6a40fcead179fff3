// A stand-in for MathJax 3 (the real one is 24 MB): window.MathJax.startup.promise resolves 300 ms
// after load, once every .math element holds an <mjx-container>. Never resolves if FAKE_MATHJAX_HANG.
(function () {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  window.MathJax = Object.assign(window.MathJax || {}, {startup: {promise: promise}});
  function typeset() {
    document.querySelectorAll('.math').forEach((el) => {
      const tex = el.textContent.trim().replace(/^\\[([]|\\[)\]]$/g, '');
      const box = document.createElement('mjx-container');
      box.textContent = tex;
      el.textContent = '';
      el.appendChild(box);
    });
    resolve();
  }
  if (!window.FAKE_MATHJAX_HANG) {
    window.addEventListener('load', () => setTimeout(typeset, 300));
  }
})();
