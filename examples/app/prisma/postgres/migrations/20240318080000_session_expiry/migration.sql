-- AlterTable
ALTER TABLE "OperatorSession" ADD COLUMN     "expiresAt" TIMESTAMP(3);
