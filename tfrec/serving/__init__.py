"""Serving over the TensorFlow Serving API: the embedded server (``tfrec serve``) and clients.

Imports TensorFlow, grpc and the serving protos only, never tfrec's models, keras-nlp or
tensorflow-recommenders, so it serves exactly what stock TensorFlow Serving would load.
"""


def __getattr__(name):
    if name in ("Client", "RestClient", "ServingClientError"):
        from tfrec.serving import client

        return getattr(client, name)
    raise AttributeError(name)
