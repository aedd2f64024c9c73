"""JVM options of the Spark applications the tests start in processes of their own (fault
runs, local-cluster executors, Connect servers).

C1 only: these applications live seconds to minutes, and on two cores C2's compiler threads
slow the start of every driver and executor (a standalone training job of a few seconds: 41-44
s -> 33 s from submit to exit). The numbers the jobs compute do not change.
(tests/shipping/standalone.py, which is also loaded on its own by path, gives its cluster the
same option.)
"""
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
CONF = {"spark.driver.extraJavaOptions": JAVA_OPTIONS,
        "spark.executor.extraJavaOptions": JAVA_OPTIONS}
