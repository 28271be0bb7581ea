"""DataValidationGate: stops the run before Transform and Trainer when the data has anomalies."""
