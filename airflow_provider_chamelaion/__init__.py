"""Apache Airflow provider for the Chamelaion lip-sync API.

Kept import-free on purpose: Airflow imports this package when it discovers providers, and DAG files
import the operator modules constantly, so nothing heavy may load here.
"""

__version__ = "0.1.0"
