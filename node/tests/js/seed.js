// The seed document's Node example, corrected (entity.name, not entity.data.name).
const {Datastore} = require('@google-cloud/datastore');   // DATASTORE_PROJECT_ID names the project
const datastore = new Datastore();
const user = {key: datastore.key(['User', 'John Doe']), data: {name: 'John Doe', email: 'john.doe@example.com'}};
datastore.save(user).then(() => datastore.get(user.key))
  .then(([entity]) => console.log('User name:', entity.name))
  .catch((err) => { console.error(err); process.exit(1); });
