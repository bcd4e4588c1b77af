"""The messages service: task 1's stub, and on the cluster the messages of the event stream."""
