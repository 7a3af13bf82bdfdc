"""Cross-cutting helpers: logging (`logconfig`), progress bars (`progress`), sizes for
people (`sizes`), the bounded thread pool (`pool`), output that survives a closed terminal
(`streams`) and the failpoints the fault-injection tests use (`failpoints`)."""
