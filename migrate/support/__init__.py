"""Cross-cutting helpers: logging (`logconfig`), progress bars (`progress`) and the
failpoints the fault-injection tests use (`failpoints`)."""
