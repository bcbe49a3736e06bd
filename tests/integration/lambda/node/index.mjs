// A plain Lambda handler module, as it would be deployed to AWS Lambda's nodejs22.x runtime:
// nothing here knows about pilotlight. tests/integration/test_lambda_ric.py runs it under the
// official runtime interface client (aws-lambda-ric) with _HANDLER=index.<export>.

const loadedAt = new Date().toISOString(); // module scope: runs once per instance (init)
console.log("init: index.mjs loaded at", loadedAt);

// index.handler: echoes the event and what the context says about the invocation.
export const handler = async (event, context) => {
  console.log("handler invoked", context.awsRequestId, JSON.stringify(event));
  return {
    event,
    awsRequestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    remainingTimeInMillis: context.getRemainingTimeInMillis(),
    xRayTraceId: process.env._X_AMZN_TRACE_ID ?? null,
    node: process.version,
    loadedAt,
  };
};

class ModelInputError extends Error {
  constructor(message) {
    super(message);
    this.name = "ModelInputError";
  }
}

// index.fail: an unhandled error; the client reports it as {errorType, errorMessage, trace}.
export const fail = async (event, context) => {
  console.error("about to fail for", context.awsRequestId);
  throw new ModelInputError(`cannot score ${JSON.stringify(event)}`);
};

// index.http: an API Gateway HTTP API (payload format 2.0) / function URL handler.
export const http = async (event, context) => {
  const body = event.body
    ? (event.isBase64Encoded ? Buffer.from(event.body, "base64").toString("utf8") : event.body)
    : "";
  return {
    statusCode: 201,
    headers: { "content-type": "application/json", "x-handler": "node-http" },
    body: JSON.stringify({
      method: event.requestContext.http.method,
      rawPath: event.rawPath,
      rawQueryString: event.rawQueryString,
      query: event.queryStringParameters ?? null,
      contentType: event.headers?.["content-type"] ?? null,
      body,
      requestId: context.awsRequestId,
    }),
  };
};
