"""Looking at a set-up without compacting anything: one module per command.

``status``, ``metrics``, ``doctor`` (with ``durability``, the checks it shares with
``redis_probe``, test-redis-buffer), ``validation_report``, ``show_generation``,
``tail``, ``inspect_generation`` and ``emit_test_issue`` (emit-validation-test).
"""
