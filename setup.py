from setuptools import find_packages, setup

setup(
    name="tfrec",
    version="0.1.0",
    description="Pretrain once, fine-tune per task, ship to TensorFlow Serving: a TensorFlow/Keras recommender framework.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfrec", "tfrec.*"]),
    package_data={"tfrec": ["configs/*.yaml"]},
    install_requires=[
        # The stack proven to work together; Keras 2 throughout (tensorflow-recommenders refuses Keras 3).
        "tensorflow==2.21.*",
        "tf-keras==2.21.*",
        "tensorflow-recommenders==0.7.7",
        "keras-nlp==0.12.1",
        "tensorflow-serving-api==2.21.*",
        # grpc.health.v1 for the embedded server, from gRPC's own maintained implementation.
        "grpcio-health-checking",
        "tensorboard==2.21.*",  # TensorBoard logs of training runs
        # tfrec tune: TPE sampling, median/Hyperband pruning and studies in SQLite or any SQLAlchemy database,
        # driving tfrec's own Keras 2 loop (KerasTuner would import Keras 3).
        "optuna>=4.5,<6",
        "pandas",
        "pyarrow",
        "pyyaml",
        # The (epsilon, delta) of differentially private runs (tfrec.training.privacy): Google's maintained
        # accountant (RDP and PLD), rather than accounting code of tfrec's own.
        "dp-accounting>=0.4,<1",
        # TFRecord shards written without TensorFlow (tfrec.data.tfrecord): Google's CRC-32C in C, which a
        # Spark worker or a data-preparation job can import without loading TensorFlow.
        "google-crc32c>=1.5,<2",
    ],
    extras_require={
        # tfrec data prepare --engine spark: Apache Spark through PySpark, which ships Spark itself (local mode
        # needs only Java 17+); the same code runs on a cluster.
        "spark": ["pyspark>=4.0,<5"],
        # tfrec finetune --federated: Flower with its simulation engine (Ray). It needs protobuf < 7, which
        # TensorFlow 2.21 and tensorflow-serving-api 2.21 (generated code 6.31) accept.
        "federated": ["flwr[simulation]>=1.42,<2"],
        "dev": ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel", "matplotlib", "psutil",
                "pyspark>=4.0,<5", "flwr[simulation]>=1.42,<2",
                # an S3 server in the test process (moto's), for datasets written to and read from a store
                "moto[s3]>=5,<6", "flask", "flask-cors"],
    },
    entry_points={"console_scripts": ["tfrec=tfrec.cli:main"]},
)
