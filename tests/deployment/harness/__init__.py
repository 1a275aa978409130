"""The harness of the multi-process deployment tests: Airflow's components as separate processes
(``airflow_deployment``), and the deployment users run at catalogue scale on PostgreSQL, Redis, Celery and
S3 (``scale_deployment``). ``benchmarks/batch_deployment.py`` runs its measurements on the same harness."""
