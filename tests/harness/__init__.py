"""What the tests share: constants, fakes of Airflow's context, runners of triggers and batches, mocked and
scripted servers, log readers. Shared helpers live here, not in ``conftest.py`` (which sets Airflow up and
holds the fixtures) nor in another test module.

The harness of the multi-process deployment tests (an Airflow deployment in processes, PostgreSQL, Redis,
Celery workers) is ``tests.deployment.harness``; the simulator in a subprocess is the package's own
``airflow_provider_chamelaion.simulator.process``.
"""
