"""The number reader without a server, for tests: train.evaluate_numbers.read_batch reads a batch of
uploads as the handler reads it."""

# Sample digits (tests/fixtures/mnist_test_100.npz) that the network reads right, as a number.
NUMBER = slice(4, 9)
